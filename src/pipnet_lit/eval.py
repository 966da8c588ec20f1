"""Evaluation entry point: `python -m pipnet_lit.eval ckpt_path=PATH [data=300w] [predictions_csv=FILE]`.

Prints NME / FR / AUC per test subset of the chosen dataset and writes them to `test_metrics.json` in the
run folder. The checkpoint carries the network settings and the mean face, so no training data is needed.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from pipnet_lit.config import check_config_dir, instantiate_group
from pipnet_lit.lit_module import PIPNetModule
from pipnet_lit.reporting import report


def load_module(ckpt_path: str | Path) -> PIPNetModule:
    """Load a trained `PIPNetModule` on the CPU without fetching ImageNet weights."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path=...)")
    return PIPNetModule.load_from_checkpoint(path, map_location="cpu", pretrained=False)


def write_predictions(predictions: list, datamodule: Any, path: str | Path) -> Path:
    """One CSV row per (subset, image): subset key, crop name, then x0 y0 x1 y1 ... in source-image pixels.

    ``predictions`` is ``trainer.predict``'s output over the datamodule's evaluation pools (one loader per
    split; an image in several subsets, e.g. 300W ``common`` and ``full``, gets a row for each).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pools = datamodule.eval_pools
    per_loader = predictions if len(pools) > 1 else [predictions]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        num = datamodule.num_landmarks
        writer.writerow(["subset", "image"] + [f"{a}{i}" for i in range(num) for a in ("x", "y")])
        for pool, batches in zip(pools, per_loader, strict=True):
            names = pool.dataset.names
            for batch in batches:
                for idx, pts in zip(batch["index"].tolist(), batch["landmarks"], strict=True):
                    coords = [f"{v:.3f}" for v in pts.flatten().tolist()]
                    for subset, mask in pool.subsets.items():
                        if mask[idx]:
                            writer.writerow([subset, names[idx], *coords])
    return path


def evaluate(cfg: DictConfig) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Test a checkpoint on every evaluation subset of `cfg.data`. Returns (results, objects)."""
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True)
    model = load_module(cfg.ckpt_path)
    # the checkpoint fixes the input size; the training folders are not needed (the mean face is inside)
    datamodule = instantiate(
        cfg.data, input_size=model.hparams.input_size, load_train=False, load_unlabeled=False
    )
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False, callbacks=_progress_bar()
    )
    trainer.test(model, datamodule=datamodule, verbose=False)
    results = model.test_results
    if trainer.is_global_zero:
        report(results, cfg.paths.output_dir, title=f"{Path(cfg.ckpt_path).name} on {datamodule.meta.name}")
    if cfg.get("predictions_csv"):
        if trainer.world_size > 1:
            raise ValueError("predictions_csv is written by one process: run eval with trainer.devices=1")
        predictions = trainer.predict(model, datamodule=datamodule)
        write_predictions(predictions, datamodule, cfg.predictions_csv)
    return results, {"model": model, "datamodule": datamodule, "trainer": trainer}


def _progress_bar() -> list:
    from lightning.pytorch.callbacks import RichProgressBar

    return [RichProgressBar()]


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
