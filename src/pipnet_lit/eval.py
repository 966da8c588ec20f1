"""Evaluation entry point: `python -m pipnet_lit.eval ckpt_path=PATH [data=300w] [predictions_csv=FILE]`.

Prints NME / FR / AUC per test subset of the chosen dataset and writes them to `test_metrics.json` in the
run folder. The checkpoint carries the network settings and the mean face, so no training data is needed.
The network runs once per image: the metrics, ``predictions_csv`` and the callbacks (per-image CSV, CED
plots, when the config has a ``callbacks`` group) all read the test pass (`PIPNetModule.eval_results`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from pipnet_lit.config import check_config_dir, instantiate_group
from pipnet_lit.evaluation import EvalPlan, EvalResults
from pipnet_lit.files import write_csv_atomic
from pipnet_lit.jobs import closing_loggers, load_trained_model, log_run_dir
from pipnet_lit.run_results import report, tested_results


def write_predictions(results: dict[str, EvalResults], plan: EvalPlan, path: str | Path) -> Path:
    """One CSV row per (subset, image): subset key, crop name, then x0 y0 x1 y1 ... in source-image pixels.

    ``results`` is the test pass (`PIPNetModule.eval_results["test"]`: subset key -> `EvalResults`) and
    ``plan`` the test stage's `EvalPlan` (``datamodule.evaluation_plan("test")``). Rows go loader by loader
    (one per split), image by image in the loader's order, and an image in several subsets (300W ``common``
    and ``full``) gets a row for each, in the loader's subset order.
    """
    num = plan.num_landmarks
    lines = [["subset", "image"] + [f"{a}{i}" for i in range(num) for a in ("x", "y")]]
    for loader in plan.loaders:
        subsets = [s for s in loader.subsets if s in results]
        rows = {s: {int(idx): r for r, idx in enumerate(results[s].indices)} for s in subsets}
        for idx in sorted(set().union(*(rows[s] for s in subsets))):
            for subset in subsets:
                row = rows[subset].get(idx)
                if row is None:
                    continue
                res = results[subset]
                coords = [f"{v:.3f}" for v in res.landmarks[row].flatten().tolist()]
                lines.append([subset, res.names[row], *coords])
    return write_csv_atomic(path, lines)


def evaluate(cfg: DictConfig) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Test a checkpoint on every evaluation subset of `cfg.data`. Returns (results, objects)."""
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True)
    model = load_trained_model(cfg.ckpt_path)
    # the checkpoint fixes the input size; the training folders are not needed (the mean face is inside)
    datamodule = instantiate(
        cfg.data, input_size=model.hparams.input_size, load_train=False, load_unlabeled=False
    )
    callbacks = instantiate_group(cfg.get("callbacks")) if cfg.get("callbacks") else _progress_bar()
    loggers = instantiate_group(cfg.get("logger"))
    with closing_loggers():  # jobs clean up: the W&B run closes however the job ends
        trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        log_run_dir(loggers, cfg.paths.output_dir)
        trainer.test(model, datamodule=datamodule, verbose=False)
        results = tested_results(model, trainer)
        if trainer.is_global_zero:
            title = f"{Path(cfg.ckpt_path).name} on {datamodule.meta.name}"
            report(results, cfg.paths.output_dir, title=title)
            if cfg.get("predictions_csv"):  # from the test pass, gathered over every rank
                plan = datamodule.evaluation_plan("test")
                write_predictions(model.eval_results["test"], plan, cfg.predictions_csv)
    return results, {"model": model, "datamodule": datamodule, "trainer": trainer}


def _progress_bar() -> list:
    from lightning.pytorch.callbacks import RichProgressBar

    return [RichProgressBar()]


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
