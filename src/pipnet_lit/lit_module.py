"""`PIPNetModule`: the LightningModule that wires network, targets, loss, decoding and metrics.

All method math lives in `pipnet_lit.pip` and `pipnet_lit.metrics`; this module only connects it to
Lightning's hooks. The mean face (and so the neighbour indices) is module state: it is taken from the
datamodule's training set before the first fit and travels inside every checkpoint (the state dict's
`_extra_state`), so evaluation and prediction need no training data.

Evaluation is one pass: each validation / test step decodes its batch once and returns (and collects,
gathered over DDP ranks) the predictions, per-image NMEs and max-scores; the metrics, the per-image CSV, the
CED plots and the prediction grids all read that pass (`EvalResults`, `PIPNetModule.eval_results`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from pipnet_lit.datasets.geometry import denormalize_points
from pipnet_lit.inference import Predictor
from pipnet_lit.metrics.functional import BOX_SIZES, box_size, fr_auc, nme
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import (
    Neighbors,
    curriculum_loss,
    encode_curriculum_targets,
    encode_targets,
    pip_loss,
)


@dataclass
class EvalResults:
    """Per-image results of one evaluation pass over a set of images (a loader's pool, or one subset of it).

    Gathered over every DDP rank; one row per image, sorted by ``indices``.

    indices: (N,) int64 positions in the loader's dataset.
    names: the N images' names (the dataset's crop names).
    landmarks_crop: (N, L, 2) float64 predictions, fractions of the crop (0 = left / top edge, 1 = right /
        bottom).
    landmarks: (N, L, 2) float64 predictions in source-image pixels (``denormalize_points``, crop box).
    max_score: (N, L) float64 each landmark's winning raw score (``decode_details``'s ``max_score``).
    nmes: metric key (``nme_io``, ...) -> (N,) float64 per-image NMEs, one entry per metric of the dataset.
    """

    indices: np.ndarray
    names: list[str]
    landmarks_crop: np.ndarray
    landmarks: np.ndarray
    max_score: np.ndarray
    nmes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, keep: np.ndarray) -> EvalResults:
        """The rows where the boolean mask ``keep`` (N,) is true."""
        rows = np.flatnonzero(keep)
        return EvalResults(
            indices=self.indices[rows],
            names=[self.names[i] for i in rows],
            landmarks_crop=self.landmarks_crop[rows],
            landmarks=self.landmarks[rows],
            max_score=self.max_score[rows],
            nmes={key: values[rows] for key, values in self.nmes.items()},
        )


class _EvalCollector(Metric):
    """One loader's per-image evaluation state; torchmetrics gathers it over DDP ranks (``cat``).

    Every state is a flat float64 vector (an empty DDP shard then gathers like any other), reshaped by
    `_loader_results`: ``index`` (N,), ``crop`` / ``pixels`` (N * L * 2,), ``score`` (N * L,), ``nme<k>`` (N,)
    for the k-th metric.
    """

    full_state_update = False

    def __init__(self, num_metrics: int) -> None:
        super().__init__()
        self.num_metrics = num_metrics
        for name in ("index", "crop", "pixels", "score", *(f"nme{k}" for k in range(num_metrics))):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> _EvalCollector:
        # torchmetrics resets the metric's dtype to float32 on any move (`.to(device)`); the states (and the
        # empty state an empty DDP shard sends) stay float64, so every rank gathers the same dtype
        this = super()._apply(fn, *args, **kwargs)
        this._dtype = torch.float64
        return this

    def update(self, index: Tensor, crop: Tensor, pixels: Tensor, score: Tensor, nmes: list[Tensor]) -> None:
        """Add a batch's scored rows: index (B,), crop / pixels (B, L, 2), score (B, L), nmes k x (B,)."""
        values = {"index": index, "crop": crop, "pixels": pixels, "score": score}
        values.update({f"nme{k}": v for k, v in enumerate(nmes)})
        for name, value in values.items():
            getattr(self, name).append(value.detach().reshape(-1).to(torch.float64))

    def compute(self) -> dict[str, Tensor]:
        names = ("index", "crop", "pixels", "score", *(f"nme{k}" for k in range(self.num_metrics)))
        return {name: dim_zero_cat(getattr(self, name)) for name in names}


def _loader_results(
    state: dict[str, Tensor], num_landmarks: int, keys: list[str], names: Sequence[str] | None
) -> EvalResults:
    """An `EvalResults` from a collector's gathered state, sorted by image index."""
    index = state["index"].cpu().numpy().astype(np.int64).reshape(-1)  # (N,), also for a single image
    order = np.argsort(index, kind="stable")
    index = index[order]
    if len(np.unique(index)) != len(index):
        raise RuntimeError(
            "an evaluation image was scored twice: evaluation loaders must give every image to exactly one "
            "rank (LandmarkDataModule does)"
        )
    shape = (len(index), num_landmarks)
    return EvalResults(
        indices=index,
        names=[names[i] for i in index] if names is not None else [str(i) for i in index],
        landmarks_crop=state["crop"].cpu().numpy().reshape(*shape, 2)[order],
        landmarks=state["pixels"].cpu().numpy().reshape(*shape, 2)[order],
        max_score=state["score"].cpu().numpy().reshape(shape)[order],
        nmes={key: state[f"nme{k}"].cpu().numpy().reshape(-1)[order] for k, key in enumerate(keys)},
    )


def _loader_names(dm: Any, stage: str) -> list[list[str]]:
    """Image names of each loader of ``stage``: the datamodule's eval pools, or its validation split."""
    layout = dm.eval_layout(stage)
    pools = dm.eval_pools
    if len(layout) == len(pools) and all(
        set(m) == set(p.subsets) for m, p in zip(layout, pools, strict=True)
    ):
        return [list(p.dataset.names) for p in pools]
    if stage == "val" and len(layout) == 1 and dm.val_set is not None:
        return [list(dm.val_set.names)]
    raise RuntimeError(f"the datamodule's {stage} loaders match neither its eval pools nor its val_set")


class PIPNetModule(L.LightningModule):
    """PIPNet training / evaluation / prediction.

    Args:
        backbone, num_landmarks, num_nb, net_stride, input_size, pretrained: the network (`PIPNet`).
        coarse_levels: 2 adds the score maps 2x / 4x coarser (the same cls_layer on max-pooled features, no
            new weights) that the curriculum self-training tasks cls2 / cls3 supervise; 0 for supervised.
        cls_loss, reg_loss, cls_weight, reg_weight: the loss (`pip_loss`); paper: l2, l1, 10, 1.
        lr, weight_decay, milestones, gamma: Adam + MultiStepLR; paper: 1e-4, -, [30, 50], 0.1.
            weight_decay None follows the official rule: 5e-4 when training from scratch, 0 when pretrained.
        metrics: the NMEs to compute, each ``{"key": "nme_io", "norm": "inter_ocular", "indices": [[36],
            [45]]}``; the first is the primary one (FR / AUC, ``val/nme``). None (default): the dataset
            YAML's ``metrics:``, taken from the datamodule.
        fr_threshold, auc_step: failure-rate threshold and AUC integration step.
        merge: decode with the neighbour-vote merge (the paper's inference) or the landmark's own estimate.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_landmarks: int = 68,
        num_nb: int = 10,
        net_stride: int = 32,
        input_size: int = 256,
        pretrained: bool = True,
        coarse_levels: int = 0,
        cls_loss: str = "l2",
        reg_loss: str = "l1",
        cls_weight: float = 10.0,
        reg_weight: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float | None = None,
        milestones: Sequence[int] = (30, 50),
        gamma: float = 0.1,
        metrics: Sequence[dict[str, Any]] | None = None,
        fr_threshold: float = 0.1,
        auc_step: float = 1e-4,
        merge: bool = True,
    ) -> None:
        super().__init__()
        # plain Python containers (not Hydra's ListConfig) so checkpoints load with weights_only=True
        milestones = [int(m) for m in milestones]
        metrics = None if metrics is None else [_plain_metric(m) for m in metrics]
        self.save_hyperparameters()
        self.net = PIPNet(
            backbone=backbone,
            num_landmarks=num_landmarks,
            num_nb=num_nb,
            net_stride=net_stride,
            pretrained=pretrained,
            input_size=input_size,
            coarse_levels=coarse_levels,
        )
        # The mean face is "extra state", not a buffer: it stays float64 on the CPU whatever precision or
        # device the network is moved to (a bf16 cast would silently change the neighbour indices).
        self.meanface: Tensor | None = None
        self._predictor: Predictor | None = None  # built on first use from net + mean face
        # per stage ('val' / 'test' / 'predict'): for each loader, subset key -> mask over its images
        self._layouts: dict[str, list[dict[str, np.ndarray]]] = {}
        self._names: dict[str, list[list[str]]] = {}
        self._metric_specs: list[dict[str, Any]] = list(metrics or [])
        # per stage, one collector per loader ("<stage>_<loader>"): the evaluation pass's per-image state
        self.collectors = torch.nn.ModuleDict()
        # after each evaluation epoch: stage -> subset key -> per-image results (every rank holds all)
        self.eval_results: dict[str, dict[str, EvalResults]] = {}
        self.test_results: dict[str, dict[str, float]] = {}
        self.example_input_array = torch.zeros(1, 3, input_size, input_size)

    # -- mean face and neighbours -----------------------------------------------------------------
    def set_meanface(self, meanface: np.ndarray | Tensor) -> None:
        """Fix the mean face (L, 2), normalized crop coordinates, that defines each landmark's neighbours."""
        mf = torch.as_tensor(np.asarray(meanface), dtype=torch.float64).cpu().clone()
        expected = (self.hparams.num_landmarks, 2)
        if tuple(mf.shape) != expected:
            raise ValueError(f"mean face of shape {tuple(mf.shape)}; this model needs {expected}")
        self.meanface = mf
        self._predictor = None

    def get_extra_state(self) -> dict[str, Any]:
        return {"meanface": self.meanface}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("meanface") is None:
            self.meanface, self._predictor = None, None
        else:
            self.set_meanface(state["meanface"])

    @property
    def neighbors(self) -> Neighbors:
        """The mean face's neighbour tables on this module's device."""
        return self.predictor.neighbors(self.device)

    @property
    def predictor(self) -> Predictor:
        """This module's network and mean face as a `pipnet_lit.inference.Predictor` (sharing the network)."""
        if self.meanface is None:
            raise RuntimeError(
                "the model has no mean face yet: train it with a datamodule (which provides one), load a "
                "checkpoint, or call set_meanface(meanface)"
            )
        if self._predictor is None:
            hp = self.hparams
            self._predictor = Predictor(
                self.net, self.meanface, num_nb=hp.num_nb, input_size=hp.input_size, merge=hp.merge
            )
        return self._predictor

    # -- set-up from the datamodule ----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            if dm.num_landmarks != self.hparams.num_landmarks:
                raise ValueError(
                    f"the data has {dm.num_landmarks} landmarks but model.num_landmarks="
                    f"{self.hparams.num_landmarks}; set model.num_landmarks={dm.num_landmarks}"
                )
            if self.meanface is None and getattr(dm, "meanface", None) is not None:
                self.set_meanface(dm.meanface)
            if self.hparams.metrics is None:
                self._metric_specs = [_plain_metric(m) for m in dm.metric_specs]
            self._layouts = {s: dm.eval_layout(s) for s in ("val", "test", "predict")}
            self._names = {s: _loader_names(dm, s) for s in ("val", "test")}
        else:
            self._layouts, self._names = {}, {}
        if not self._metric_specs:
            self._metric_specs = [{"key": "nme_raw", "norm": "none", "indices": None}]
        for stage in ("val", "test"):
            for i in range(len(self._layouts.get(stage, []))):
                if f"{stage}_{i}" not in self.collectors:
                    self.collectors[f"{stage}_{i}"] = _EvalCollector(len(self._metric_specs))

    @property
    def metric_keys(self) -> list[str]:
        """The NME keys scored on every evaluation subset (``nme_io``, ...); the first is the primary one."""
        return [spec["key"] for spec in self._metric_specs]

    def image_names(self, stage: str, dataloader_idx: int = 0) -> list[str] | None:
        """Names of the images of loader ``dataloader_idx`` of ``stage`` ('val' / 'test'); None if unknown."""
        loaders = self._names.get(stage, [])
        return loaders[dataloader_idx] if dataloader_idx < len(loaders) else None

    # -- forward / decode --------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Any:
        """Raw head outputs (`PIPOutputs`) for ImageNet-normalized RGB images (B, 3, S, S)."""
        return self.net(images)

    def predict_landmarks(self, images: Tensor) -> Tensor:
        """(B, L, 2) landmarks, normalized to [0, 1] of the input crop."""
        return self.predictor.landmarks(images).landmarks

    def _landmarks_and_scores(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """One forward + decode: (B, L, 2) crop-normalized landmarks and (B, L) winning raw scores."""
        out = self.predictor.landmarks(images)
        return out.landmarks, out.scores

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """The PIP loss; with a batch ``task`` tensor (self-training) that is not all ``std``, the
        curriculum loss, each sample supervising the maps of its task (std / cls2 / cls3)."""
        out = self.net(batch["image"])
        grid = tuple(out.score.shape[-2:])
        hp = self.hparams
        weights = dict(
            cls_loss=hp.cls_loss, reg_loss=hp.reg_loss, cls_weight=hp.cls_weight, reg_weight=hp.reg_weight
        )
        tasks = batch.get("task")
        if tasks is None or bool((tasks == 0).all()):  # all std: exactly the supervised loss
            loss = pip_loss(out, encode_targets(batch["landmarks"], self.neighbors, grid), **weights)
        else:
            if not out.score_coarse:
                raise ValueError(
                    "this batch holds cls2 / cls3 self-training samples, but the network has no coarse score "
                    "maps: set model.coarse_levels=2"
                )
            targets = encode_curriculum_targets(batch["landmarks"], tasks, self.neighbors, grid)
            loss = curriculum_loss(out, targets, **weights)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", loss.total, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/loss_{k}": getattr(loss, k) for k in ("cls", "x", "y", "nb_x", "nb_y")},
            batch_size=batch_size,
        )
        return loss.total

    # -- evaluation --------------------------------------------------------------------------------
    def _per_image_nmes(self, pred: Tensor, target: Tensor, box: Tensor) -> list[Tensor]:
        """Each metric's per-image NMEs (B,) for crop-normalized pred, target (B, L, 2) and boxes (B, 4)."""
        values = []
        for spec in self._metric_specs:
            if spec["norm"] in BOX_SIZES:  # pixels of the crop box, divided by the box's size
                dtype = torch.float32 if pred.device.type == "mps" else torch.float64
                wh = box[:, None, 2:4].to(dtype)
                values.append(nme(pred.to(dtype) * wh, target.to(dtype) * wh, box_size(box, spec["norm"])))
            else:
                values.append(nme(pred, target, spec["norm"], norm_indices=spec.get("indices")))
        return values

    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int, stage: str) -> dict[str, Any]:
        """One forward and decode per batch; stashes the batch's per-image results for the epoch's end.

        Returns the batch's evaluation pass, for callbacks (``on_*_batch_end``): ``index`` (B,),
        ``landmarks_crop`` (B, L, 2) crop fractions, ``landmarks`` (B, L, 2) source-image pixels,
        ``max_score`` (B, L), and ``nme``: key -> (B,) per-image NMEs (NaN for an image in no subset).
        """
        layout = self._layouts.get(stage)
        if not layout:
            raise RuntimeError(
                "evaluation needs a LandmarkDataModule (it says which subsets each loader holds)"
            )
        pred, max_score = self._landmarks_and_scores(batch["image"])
        pixels = denormalize_points(pred, batch["box"].to(pred.dtype))
        index = batch["index"]
        masks = layout[dataloader_idx].values()
        scored = np.zeros(len(index), dtype=bool)
        for mask in masks:
            scored |= mask[index.cpu().numpy()]
        rows = torch.from_numpy(np.flatnonzero(scored)).to(pred.device)
        p, t, box = pred[rows], batch["landmarks"][rows], batch["box"][rows]
        nmes = self._per_image_nmes(p, t, box) if len(rows) else []
        if len(rows):
            self.collectors[f"{stage}_{dataloader_idx}"].update(
                index[rows], p, pixels[rows], max_score[rows], nmes
            )
        per_image = {}
        for spec, values in zip(self._metric_specs, nmes or [None] * len(self._metric_specs), strict=True):
            full = torch.full((len(index),), float("nan"), dtype=torch.float64, device=pred.device)
            if values is not None:
                full[rows] = values.to(full.dtype)
            per_image[spec["key"]] = full
        return {
            "index": index,
            "landmarks_crop": pred,
            "landmarks": pixels,
            "max_score": max_score,
            "nme": per_image,
        }

    def _eval_epoch_end(self, stage: str) -> dict[str, dict[str, float]]:
        """Gather the pass, split it into subsets, score them, log ``<stage>/<subset>/<key>``."""
        results: dict[str, dict[str, float]] = {}
        per_subset: dict[str, EvalResults] = {}
        distributed = self.trainer.world_size > 1
        keys = self.metric_keys
        primary = keys[0]
        hp = self.hparams
        for i, masks in enumerate(self._layouts.get(stage, [])):
            collector = self.collectors[f"{stage}_{i}"]
            # under DDP every rank must join compute()'s all-gather, even one whose shard was empty
            if not (collector.update_called or distributed):
                continue
            state = collector.compute()
            collector.reset()
            if state["index"].numel() == 0:
                continue
            loader = _loader_results(state, hp.num_landmarks, keys, self.image_names(stage, i))
            for name, mask in masks.items():
                keep = mask[loader.indices]
                if not keep.any():
                    continue
                subset = loader.select(keep)
                per_subset[name] = subset
                values: dict[str, float] = {}
                for key in keys:
                    values[key] = float(subset.nmes[key].mean())
                    if key == primary:
                        fr, auc = fr_auc(subset.nmes[key], hp.fr_threshold, hp.auc_step)
                        values[f"fr@{hp.fr_threshold:.2f}"] = fr
                        values[f"auc@{hp.fr_threshold:.2f}"] = auc
                results[name] = values
        self.eval_results[stage] = per_subset
        for name, values in results.items():
            for key, value in values.items():
                # the collectors gathered every rank's images already: the values agree across ranks
                self.log(f"{stage}/{name}/{key}", value, add_dataloader_idx=False, sync_dist=False)
        if results:
            first = next(iter(results.values()))
            self.log(f"{stage}/nme", first[primary], prog_bar=True, add_dataloader_idx=False)
        return results

    def validation_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return self._eval_step(batch, dataloader_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self._eval_step(batch, dataloader_idx, "test")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._eval_epoch_end("test")

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Landmarks in the source image's pixels (the annotation's convention) and in crop coordinates."""
        pred = self.predict_landmarks(batch["image"])
        pixels = denormalize_points(pred, batch["box"].to(pred.dtype))
        return {"landmarks": pixels, "landmarks_crop": pred, "index": batch["index"]}

    # -- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay = hp.weight_decay if hp.weight_decay is not None else (0.0 if hp.pretrained else 5e-4)
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(hp.milestones), gamma=hp.gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _plain_metric(spec: Any) -> dict[str, Any]:
    """A metric spec as plain Python (checkpoints load with weights_only=True)."""
    spec = dict(spec)
    indices = spec.get("indices")
    return {
        "key": str(spec["key"]),
        "norm": str(spec["norm"]),
        "indices": None if indices is None else [[int(i) for i in g] for g in indices],
    }
