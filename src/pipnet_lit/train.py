"""Training entry point: `python -m pipnet_lit.train [+experiment=NAME] [key=value ...]`.

`train(cfg)` is importable, so tests and other drivers (sweeps, self-training rounds) call it directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from pipnet_lit.config import check_config_dir, instantiate_group
from pipnet_lit.reporting import report, tested_results


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit and/or test the model the config describes. Returns (metrics, objects).

    With ``ssl.round`` set (the self-training experiments), runs that round of the chain instead
    (``pipnet_lit.ssl.chain.run_round``).
    """
    from hydra.utils import instantiate

    if cfg.get("ssl") is not None and cfg.ssl.get("round") is not None:
        from pipnet_lit.ssl.chain import run_round

        return run_round(cfg)
    _check_run_folder(cfg)
    L.seed_everything(cfg.seed, workers=True)
    return fit_and_test(cfg, instantiate(cfg.data))


def fit_and_test(cfg: DictConfig, datamodule: L.LightningDataModule) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build model, callbacks, loggers and trainer from ``cfg``; fit on ``datamodule``, then test."""
    from hydra.utils import instantiate

    model = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    # Jobs clean up: the W&B run closes however the job ends (failed on an exception), so the next job of
    # a multirun in this process logs to a run of its own.
    try:
        result = _fit_and_test(cfg, datamodule, model, callbacks, loggers)
    except BaseException:
        close_loggers(failed=True)
        raise
    close_loggers(failed=False)
    return result


def close_loggers(failed: bool = False) -> None:
    """Finish this process's W&B run, if one is open: exit code 1 marks a crashed job failed."""
    wandb = sys.modules.get("wandb")  # never imported: no W&B run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def log_run_dir(loggers: list[Any], run_dir: str | Path) -> None:
    """Add the run folder to the W&B run config (``run_dir``), next to the resolved Hydra config."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            logger.experiment.config.update({"run_dir": str(Path(run_dir).resolve())}, allow_val_change=True)


def _fit_and_test(
    cfg: DictConfig, datamodule: L.LightningDataModule, model: Any, callbacks: list[Any], loggers: list[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    from hydra.utils import instantiate

    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.fast_dev_run:  # Lightning suppresses checkpoints there, except save_last's write at train end
        for callback in trainer.checkpoint_callbacks:
            callback.save_last = False
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log_run_dir(loggers, cfg.paths.output_dir)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        ckpt = cfg.get("test_ckpt", "last")
        if ckpt in ("best", "last"):
            callback = trainer.checkpoint_callback
            found = getattr(callback, f"{ckpt}_model_path", "") if callback else ""
            ckpt = found or None  # no checkpoint (e.g. fast_dev_run): test the weights in memory
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        results = tested_results(model, trainer)
        if results and trainer.is_global_zero:
            report(results, cfg.paths.output_dir)
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def _check_run_folder(cfg: DictConfig) -> None:
    """Refuse to mix two runs in one folder, and to test nothing when training is off."""
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    if cfg.get("train", True) and cfg.get("ckpt_path") is None and any(checkpoints.glob("*.ckpt")):
        raise FileExistsError(
            f"{checkpoints} already holds a run named {cfg.run_name!r}: resume it with ckpt_path=last, or "
            "start a new one with run_name=<another name>"
        )
    if (
        not cfg.get("train", True)
        and cfg.get("test", True)
        and cfg.get("test_ckpt") in ("best", "last", None)
    ):
        raise ValueError(
            "train=false tests a given checkpoint: set test_ckpt=/path/to.ckpt "
            "(or use python -m pipnet_lit.eval)"
        )


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/nme"))


if __name__ == "__main__":
    main()
