"""Training entry point: `python -m pipnet_lit.train [+experiment=NAME] [key=value ...]`.

`train(cfg)` is importable, so tests and other drivers (sweeps, self-training rounds) call it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from pipnet_lit.config import check_config_dir
from pipnet_lit.jobs import run_job


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit and/or test the model the config describes. Returns (metrics, objects).

    With ``ssl.round`` set (the self-training experiments), runs that round of the chain instead
    (``pipnet_lit.ssl.chain.run_round``): this is the one place that knows chains exist.
    """
    from hydra.utils import instantiate

    if cfg.get("ssl") is not None and cfg.ssl.get("round") is not None:
        from pipnet_lit.ssl.chain import run_round

        return run_round(cfg)
    _check_run_folder(cfg)
    L.seed_everything(cfg.seed, workers=True)
    return run_job(cfg, instantiate(cfg.data))


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
