"""What every job does around Lightning, in one place: `train`, `eval` and the self-training chain use it and
none of them imports another.

A job builds model, callbacks, loggers and trainer from its config (`build_job`), fits and / or tests
(`fit_and_test`), records its run folder in the loggers, and closes its loggers however it ends
(`closing_loggers`: a W&B multirun otherwise logs every job into the first job's run). `load_trained_model`
reads a trained model for testing or pseudo-labelling.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from pipnet_lit import faults
from pipnet_lit.checkpoints import find_resume_point, read_checkpoint
from pipnet_lit.config import instantiate_group
from pipnet_lit.run_results import report, tested_results

log = logging.getLogger(__name__)

#: What an unusable checkpoint is renamed to when a run resumes past it (no longer a ``*.ckpt``).
DAMAGED_SUFFIX = ".damaged"


@dataclass
class Job:
    """A job's Lightning objects, built from its config."""

    cfg: DictConfig
    model: Any
    callbacks: list[Any]
    loggers: list[Any]
    trainer: L.Trainer

    def objects(self, datamodule: Any) -> dict[str, Any]:
        """What `train` / `run_round` return beside the metrics."""
        return {
            "cfg": self.cfg,
            "datamodule": datamodule,
            "model": self.model,
            "trainer": self.trainer,
        }


def close_loggers(failed: bool = False) -> None:
    """Finish this process's W&B run, if one is open: exit code 1 marks a crashed job failed."""
    wandb = sys.modules.get("wandb")  # never imported: no W&B run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


@contextmanager
def closing_loggers() -> Iterator[None]:
    """Close the job's loggers when the block ends: failed on an exception (re-raised), else finished."""
    try:
        yield
    except BaseException:
        close_loggers(failed=True)
        raise
    close_loggers(failed=False)


def log_run_dir(loggers: list[Any], run_dir: str | Path) -> None:
    """Add the run folder to the W&B run config (``run_dir``), next to the resolved Hydra config."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            logger.experiment.config.update({"run_dir": str(Path(run_dir).resolve())}, allow_val_change=True)


def build_job(cfg: DictConfig, model: Any = None) -> Job:
    """Instantiate model (unless given), callbacks, loggers and trainer from ``cfg``; log the resolved config
    and the run folder to the loggers. Call inside `closing_loggers`."""
    from hydra.utils import instantiate

    model = instantiate(cfg.model) if model is None else model
    callbacks = instantiate_group(cfg.get("callbacks"))
    if os.environ.get(faults.ENV):  # the kill-at-every-phase tests: SIGKILL at an exact training / test step
        from pipnet_lit.callbacks import FaultPoints

        callbacks.append(FaultPoints())
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.fast_dev_run:  # Lightning suppresses checkpoints there, except save_last's write at train end
        for callback in trainer.checkpoint_callbacks:
            callback.save_last = False
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log_run_dir(loggers, cfg.paths.output_dir)
    return Job(cfg, model, callbacks, loggers, trainer)


def fit_and_test(job: Job, datamodule: L.LightningDataModule) -> dict[str, Any]:
    """Fit (``cfg.train``) and test (``cfg.test``, the ``cfg.test_ckpt`` checkpoint) the job's model on
    ``datamodule``; rank 0 prints the results and writes ``test_metrics.json``. Returns the logged metrics."""
    cfg, model, trainer = job.cfg, job.model, job.trainer
    if cfg.get("train", True):
        # weights_only: a checkpoint is plain data (the reader checks that); nothing in it may run code
        trainer.fit(
            model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, trainer), weights_only=True
        )
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        ckpt = cfg.get("test_ckpt", "last")
        if ckpt in ("best", "last"):
            callback = trainer.checkpoint_callback
            found = getattr(callback, f"{ckpt}_model_path", "") if callback else ""
            ckpt = found or None  # no checkpoint (e.g. fast_dev_run): test the weights in memory
        if ckpt is not None:  # the one checkpoint reader; Lightning reads checkpoints only to resume
            model.load_state_dict(read_checkpoint(ckpt).state_dict, strict=True)
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        results = tested_results(model, trainer)
        if results and trainer.is_global_zero:
            report(results, cfg.paths.output_dir)
    return metrics


def resume_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from: ``ckpt_path=last`` is the newest checkpoint of the run
    folder that can be read (`pipnet_lit.checkpoints.find_resume_point`; a damaged one is skipped with a
    warning naming it and why), None when the folder holds none (a fresh start); any other value is passed
    on as it is (a path, or Lightning's ``best`` / ``hpc``)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path != "last":
        return ckpt_path
    callback = trainer.checkpoint_callback
    folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
    if folder is None:
        folder = Path(cfg.paths.output_dir) / "checkpoints"
    point = find_resume_point(folder)
    if trainer.is_global_zero:
        for line in point.report():
            log.warning(line)
        # out of the way (kept for inspection): the run writes a fresh last.ckpt, not last-v1.ckpt beside it
        for path, _ in point.skipped:
            aside = path.with_name(path.name + DAMAGED_SUFFIX)
            path.replace(aside)
            log.warning(f"moved the unusable {path.name} aside to {aside.name}")
        if point.temporaries:
            names = ", ".join(p.name for p in point.temporaries)
            log.warning(f"removing what killed checkpoint saves left in {folder}: {names}")
        for tmp in point.temporaries:
            tmp.unlink(missing_ok=True)
    return str(point.path) if point.path is not None else None


def run_job(cfg: DictConfig, datamodule: L.LightningDataModule) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the job, fit and test it on ``datamodule``, close its loggers. Returns (metrics, objects)."""
    with closing_loggers():
        job = build_job(cfg)
        metrics = fit_and_test(job, datamodule)
    return metrics, job.objects(datamodule)


def load_trained_model(ckpt_path: str | Path) -> Any:
    """A trained `PIPNetModule` from a checkpoint, on the CPU, without fetching ImageNet weights.

    Read by `pipnet_lit.checkpoints.read_checkpoint` (the reader every consumer shares); the module is built
    from the recorded hyper-parameters (``pretrained=False``) and its state loaded strictly.
    """
    import inspect

    from pipnet_lit.lit_module import PIPNetModule

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path=...)")
    ckpt = read_checkpoint(path)
    accepted = inspect.signature(PIPNetModule.__init__).parameters
    hparams = {k: v for k, v in ckpt.hparams.items() if k in accepted}
    module = PIPNetModule(**{**hparams, "pretrained": False})
    module.load_state_dict(ckpt.state_dict, strict=True)
    return module
