"""Training entry point: `python -m pipnet_lit.train [+experiment=NAME] [key=value ...]`.

`train(cfg)` is importable, so tests and other drivers (sweeps, self-training rounds) call it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from pipnet_lit.config import check_config_dir, instantiate_group
from pipnet_lit.reporting import print_metrics, write_metrics


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit and/or test the model the config describes. Returns (metrics, objects)."""
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        ckpt = cfg.get("test_ckpt", "best")
        if ckpt == "best":
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            ckpt = best or None  # no checkpoint (e.g. fast_dev_run): test the weights in memory
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if model.test_results and trainer.is_global_zero:
            print_metrics(model.test_results)
            write_metrics(model.test_results, Path(cfg.paths.output_dir) / "test_metrics.json")
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/nme"))


if __name__ == "__main__":
    main()
