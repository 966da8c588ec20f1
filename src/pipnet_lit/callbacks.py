"""Lightning callbacks that read the evaluation pass: per-image results, CED plots, prediction grids.

The module's validation / test steps decode every image once (`PIPNetModule.eval_results`, and each step's
returned dict); these callbacks only consume that pass, so they never run the network. Files go to the run
folder (``dirpath``; default the trainer's ``default_root_dir``) on global rank 0, from data already
gathered over every DDP rank. Plots are drawn with matplotlib's Agg canvas (headless, no pyplot state).
When a `WandbLogger` or `TensorBoardLogger` is attached, the plots are logged to it too; with CSV alone
they are files only.

Configured in ``conf/callbacks/default.yaml``; each one can be dropped, e.g. ``callbacks.ced_plot=null``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipnet_lit import presentation
from pipnet_lit.faults import kill_point
from pipnet_lit.lit_module import PIPNetModule
from pipnet_lit.metrics.functional import ced_curve
from pipnet_lit.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from pipnet_lit.presentation import CEDCurve, new_figure, save_figure
from pipnet_lit.random_state import capture_global_random_state, restore_global_random_state
from pipnet_lit.run_results import PER_IMAGE_NAME, write_per_image_results

PREDICTION_COLOUR = "#ff3b30"  # red
TARGET_COLOUR = "#34c759"  # green


def _module(pl_module: L.LightningModule, who: str) -> PIPNetModule:
    if not isinstance(pl_module, PIPNetModule):
        raise TypeError(f"{who} reads PIPNetModule's evaluation pass; got {type(pl_module).__name__}")
    return pl_module


def _folder(dirpath: str | Path | None, trainer: L.Trainer) -> Path:
    """``dirpath``, or the run folder (the trainer's ``default_root_dir``)."""
    return Path(dirpath) if dirpath is not None else Path(trainer.default_root_dir)


def _plots(dirpath: str | Path | None, trainer: L.Trainer) -> Path:
    """``dirpath``, or ``<run folder>/plots``."""
    return Path(dirpath) if dirpath is not None else Path(trainer.default_root_dir) / "plots"


def figure_array(fig: Figure) -> np.ndarray:
    """The figure rendered as an (H, W, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# -- per-image results ---------------------------------------------------------------------------------
class PerImageResults(L.Callback):
    """After testing, writes ``<dirpath>/<filename>`` (``test_per_image.csv``): subset, name, one column per
    NME key of the dataset (``nme_io``, ``nme_ip``, ...), so any run can be re-scored or re-plotted."""

    def __init__(self, dirpath: str | Path | None = None, filename: str = PER_IMAGE_NAME) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.path: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _module(pl_module, "PerImageResults")
        results = module.eval_results.get("test")
        if not results or not trainer.is_global_zero:
            return
        path = _folder(self.dirpath, trainer) / self.filename
        self.path = write_per_image_results(results, module.metric_keys, path)


# -- cumulative error distribution ----------------------------------------------------------------------
def plot_ced(
    xs: np.ndarray,
    ys: np.ndarray,
    title: str,
    label: str = "nme",
    fr: float | None = None,
    auc: float | None = None,
) -> Figure:
    """A CED figure: fraction of images (y) with NME <= x, x in percent up to the FR threshold.

    ``xs``, ``ys``: the curve (`pipnet_lit.metrics.functional.ced_curve`); the line's data are exactly
    (100 * xs, ys). Drawn by `pipnet_lit.presentation.plot_ced` in its `RUN_CED` style.
    """
    style = presentation.RUN_CED
    return presentation.plot_ced(
        [CEDCurve(presentation.ced_legend(label, fr, auc, style), np.asarray(xs), np.asarray(ys))],
        title=title,
        xlabel=f"{label} (%)",
        xmax=float(xs[-1]),
        style=style,
    )


class CEDPlot(L.Callback):
    """After testing, the cumulative error distribution of each test subset (primary NME, up to the FR
    threshold): ``<dirpath>/ced_<subset>.png`` and, with a W&B logger, a line plot (``test/<subset>/ced``,
    a table of nme / fraction) and the PNG (``test/<subset>/ced_image``) in the run; with TensorBoard, the
    PNG as an image. ``curves`` keeps the last curves drawn: subset -> (xs, ys)."""

    def __init__(self, dirpath: str | Path | None = None, wandb_max_points: int = 1001) -> None:
        self.dirpath = dirpath
        self.wandb_max_points = wandb_max_points
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.paths: dict[str, Path] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _module(pl_module, "CEDPlot")
        results = module.eval_results.get("test")
        if not results or not trainer.is_global_zero:
            return
        hp = module.hparams
        key = module.metric_keys[0]
        folder = _plots(self.dirpath, trainer)
        self.curves, self.paths = {}, {}
        for subset, res in results.items():
            xs_t, ys_t = ced_curve(res.nmes[key], hp.fr_threshold, hp.auc_step)
            xs, ys = xs_t.numpy(), ys_t.numpy()
            summary = module.test_results.get(subset, {})
            fig = plot_ced(
                xs, ys, f"CED {subset} (n={len(res)})", key,
                summary.get(f"fr@{hp.fr_threshold:.2f}"), summary.get(f"auc@{hp.fr_threshold:.2f}"),
            )  # fmt: skip
            path = save_figure(fig, folder / f"ced_{subset}.png")
            self.curves[subset], self.paths[subset] = (xs, ys), path
            self._log(trainer, subset, key, xs, ys, path, fig)

    def _log(self, trainer, subset, key, xs, ys, path: Path, fig: Figure) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                step = np.unique(np.linspace(0, len(xs) - 1, min(len(xs), self.wandb_max_points)).round())
                rows = [[float(xs[int(i)]), float(ys[int(i)])] for i in step]
                table = wandb.Table(data=rows, columns=[key, "fraction"])
                chart = wandb.plot.line(table, key, "fraction", title=f"CED {subset}")
                logger.log_metrics(
                    {f"test/{subset}/ced": chart, f"test/{subset}/ced_image": wandb.Image(str(path))},
                    step=trainer.global_step,
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    f"test/{subset}/ced", figure_array(fig), trainer.global_step, dataformats="HWC"
                )


# -- prediction grids ----------------------------------------------------------------------------------
def to_display(images: np.ndarray) -> np.ndarray:
    """ImageNet-normalized RGB crops (K, 3, S, S) -> (K, S, S, 3) float RGB in [0, 1] for display."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return np.clip(np.asarray(images, dtype=np.float32) * std + mean, 0, 1).transpose(0, 2, 3, 1)


def plot_prediction_grid(
    images: np.ndarray,
    predictions: np.ndarray,
    targets: np.ndarray,
    titles: list[str] | None = None,
    columns: int = 4,
    title: str = "",
) -> Figure:
    """A grid of crops with predicted (red) and ground-truth (green) landmarks.

    Args:
        images: (K, S, S, 3) RGB crops in [0, 1] (see `to_display`).
        predictions, targets: (K, L, 2) crop fractions (0 = left / top edge, 1 = right / bottom edge).
        titles: one caption per crop.
    """
    k = len(images)
    columns = max(1, min(columns, k))
    rows = (k + columns - 1) // columns
    fig = new_figure(2.6 * columns, 2.8 * rows + 0.4)
    for i in range(k):
        ax = fig.add_subplot(rows, columns, i + 1)
        size_y, size_x = images[i].shape[:2]
        # pixel (0, 0) spans [0, 1] x [0, 1]: fractions times the size are the continuous coordinates
        ax.imshow(images[i], extent=(0, size_x, size_y, 0), interpolation="nearest")
        for points, colour, label in ((targets[i], TARGET_COLOUR, "ground truth"),
                                      (predictions[i], PREDICTION_COLOUR, "prediction")):  # fmt: skip
            ax.scatter(points[:, 0] * size_x, points[:, 1] * size_y, s=6, c=colour, label=label, linewidths=0)
        ax.set_xlim(0, size_x)
        ax.set_ylim(size_y, 0)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=7)
    handles, labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, markerscale=2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


class PredictionGrid(L.Callback):
    """Every ``every_n_epochs`` epochs, a grid of the first ``num_images`` crops of the first validation
    loader with predicted (red) vs ground-truth (green) landmarks: ``<dirpath>/val_grid_epoch<E>.png``
    (E: Lightning's 0-based epoch, as in checkpoint names; drawn after epochs E = N-1, 2N-1, ...), and
    ``val/grid`` in W&B / TensorBoard when attached. Reads the validation steps' outputs (rank 0's crops)."""

    def __init__(
        self,
        dirpath: str | Path | None = None,
        every_n_epochs: int = 5,
        num_images: int = 8,
        columns: int = 4,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(
                f"PredictionGrid: every_n_epochs ({every_n_epochs}) and num_images ({num_images}) must be "
                ">= 1 (callbacks.prediction_grid.every_n_epochs / num_images)"
            )
        self.dirpath = dirpath
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.columns = columns
        self.paths: list[Path] = []
        self._active = False
        self._items: list[dict[str, Any]] = []

    def _due(self, trainer: L.Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active = self._due(trainer)
        self._items = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active or dataloader_idx != 0 or len(self._items) >= self.num_images:
            return
        if not isinstance(outputs, dict) or "landmarks_crop" not in outputs:
            return
        module = _module(pl_module, "PredictionGrid")
        names = module.image_names("val", 0)
        primary = module.metric_keys[0]
        take = min(self.num_images - len(self._items), len(batch["index"]))
        for r in range(take):
            index = int(batch["index"][r])
            error = float(outputs["nme"][primary][r])
            self._items.append(
                {
                    "image": batch["image"][r].detach().float().cpu().numpy(),
                    "prediction": outputs["landmarks_crop"][r].detach().double().cpu().numpy(),
                    "target": batch["landmarks"][r].detach().double().cpu().numpy(),
                    "title": (names[index] if names else f"#{index}")
                    + ("" if np.isnan(error) else f"\n{primary} {100 * error:.2f}%"),
                }
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active or not self._items:
            return
        self._active = False
        epoch = trainer.current_epoch
        fig = plot_prediction_grid(
            to_display(np.stack([it["image"] for it in self._items])),
            np.stack([it["prediction"] for it in self._items]),
            np.stack([it["target"] for it in self._items]),
            [it["title"] for it in self._items],
            self.columns,
            f"epoch {epoch}: prediction (red) vs ground truth (green)",
        )
        folder = _plots(self.dirpath, trainer)
        path = save_figure(fig, folder / f"val_grid_epoch{epoch:03d}.png")
        self.paths.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.log_metrics({"val/grid": wandb.Image(str(path))}, step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/grid", figure_array(fig), epoch, dataformats="HWC")
        self._items = []


class FaultPoints(L.Callback):
    """The training and test fault points of `pipnet_lit.faults` (``train_batch``, ``test``): added to every
    job by `pipnet_lit.jobs.build_job` while ``PIPNET_KILL_AT`` is set (the kill-at-every-phase tests)."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        kill_point("train_batch")

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int, dataloader_idx: int = 0
    ) -> None:
        kill_point("test")


class ResumableRandomState(L.Callback):
    """Saves the global random generators (torch, CUDA, numpy, Python) in every checkpoint and restores them
    on resume, so that ``ckpt_path=last`` continues with the data order and augmentation an uninterrupted
    run would have drawn (the datamodule's `state_dict` keeps the augmentation pipeline's own generators).
    Stored as plain values: checkpoints still load with ``torch.load(weights_only=True)``."""

    def state_dict(self) -> dict[str, Any]:
        return capture_global_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            restore_global_random_state(state_dict)


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's `ModelCheckpoint`, except that ``save_last=True`` writes ``last.ckpt`` at the end of every
    training epoch, validated or not, as its name says.

    Since Lightning 2.6, ``save_last=True`` rewrites ``last.ckpt`` only when a top-k checkpoint is saved in
    the same step: with ``monitor=val/nme, save_top_k=1``, an epoch whose validation NME did not improve left
    ``last.ckpt`` at the best epoch, so ``ckpt_path=last`` resumed from an older epoch and ``test_ckpt=last``
    (the official protocol: the final epoch's model) tested the best one. And with
    ``check_val_every_n_epoch > 1`` (the demo and the self-training rounds validate once, at the end)
    Lightning saves only after a validation, so a run killed before its last epoch had nothing to resume from.
    """

    def _save_last_every_time(self, trainer: L.Trainer) -> None:
        if self.save_last is True and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # an epoch's validation runs before this hook: when it saved, this step is saved already
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_every_time(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(
            trainer
        ):
            self._save_last_every_time(trainer)


class StepTimer(L.Callback):
    """Where training time goes: per step, the wait for the next batch (data loading, host-to-device copy)
    and the step itself (forward, backward, optimizer), summed over the fit; CUDA is synchronized at each
    boundary so GPU work is counted where it runs. `summary` gives images per second and the share of the
    time spent waiting for data (a fed GPU waits for ~0 %); logged as ``perf/*`` each epoch.

    The first ``skip_steps`` steps (warm-up: cuDNN autotuning, worker start-up) are left out.
    """

    def __init__(self, skip_steps: int = 2) -> None:
        self.skip_steps = skip_steps
        self.wait = self.compute = 0.0
        self.images = self.steps = 0
        self._mark: float | None = None
        self._seen = 0

    @staticmethod
    def _now(trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = self._now(trainer)  # the wait for the epoch's first batch counts

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        now = self._now(trainer)
        if self._mark is not None and self._seen >= self.skip_steps:
            self.wait += now - self._mark
        self._mark = now

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        now = self._now(trainer)
        if self._seen >= self.skip_steps and self._mark is not None:
            self.compute += now - self._mark
            self.steps += 1
            self.images += int(batch["image"].shape[0])
        self._seen += 1
        self._mark = now

    def summary(self) -> dict[str, float]:
        total = self.wait + self.compute
        return {
            "steps": float(self.steps),
            "images_per_s": self.images / total if total else 0.0,
            "data_wait_share": self.wait / total if total else 0.0,
            "step_ms": 1000 * self.compute / self.steps if self.steps else 0.0,
            "wait_ms": 1000 * self.wait / self.steps if self.steps else 0.0,
        }

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.steps:
            pl_module.log_dict({f"perf/{k}": v for k, v in self.summary().items()}, on_epoch=True)
