"""Evaluation without Lightning: what is scored on each loader, per-image scoring, results and summaries.

A data module describes one stage's evaluation as an `EvalPlan` (`EvaluationData.evaluation_plan`): the
NMEs to compute (`MetricSpec`) and, for each loader of the stage, its images' names and the subsets scored
on it (subset key -> boolean mask over the loader's images). The LightningModule only wires these pieces:

* per batch: `to_source_pixels` (crop fractions -> source-image pixels), `score_batch` (each metric's
  per-image NMEs for the images in some subset) and `ResultsCollector.update`;
* per epoch: `ResultsCollector.gather` (every DDP rank's images, as one `EvalResults` sorted by index),
  `split_subsets` and `subset_summary` (mean NME per key, FR / AUC of the primary key).

The state is the per-image NME (and prediction), so FR / AUC and multi-GPU results are exact. Nothing here
imports Lightning, Hydra or OmegaConf, nor the data module (which imports this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from pipnet_lit.datasets.geometry import denormalize_points
from pipnet_lit.datasets.meta import MetricSpec
from pipnet_lit.metrics.functional import BOX_SIZES, box_size, fr_auc, nme

__all__ = [
    "DEFAULT_METRICS",
    "BatchScores",
    "EvalPlan",
    "EvalResults",
    "EvaluationData",
    "LoaderPlan",
    "MetricSpec",
    "ResultsCollector",
    "collected_results",
    "metric_spec",
    "per_image_nmes",
    "score_batch",
    "split_subsets",
    "subset_summary",
    "to_source_pixels",
]

#: What is scored when neither the model nor the data name any NME: the raw crop-fraction error.
DEFAULT_METRICS = (MetricSpec("nme_raw", "none", None),)


def metric_spec(spec: MetricSpec | Mapping[str, Any]) -> MetricSpec:
    """A `MetricSpec` from itself or a mapping ``{"key": "nme_io", "norm": "inter_ocular", "indices":
    [[36], [45]]}`` (``indices`` optional: only the scheme norms inter_ocular / inter_pupil use it)."""
    if isinstance(spec, MetricSpec):
        return spec
    indices = spec.get("indices")
    groups = None if indices is None else tuple(tuple(int(i) for i in group) for group in indices)
    return MetricSpec(str(spec["key"]), str(spec["norm"]), groups)


# -- the plan --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoaderPlan:
    """One evaluation loader: its images' names (position i = dataset index i) and the subsets scored on
    it, subset key (``300w_common``) -> boolean mask (N,) over its images, in reporting order."""

    names: tuple[str, ...]
    subsets: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        for key, mask in self.subsets.items():
            if mask.dtype != np.bool_ or mask.shape != (len(self.names),):
                raise ValueError(
                    f"evaluation plan: subset {key!r} needs a boolean mask of shape ({len(self.names)},) "
                    f"(one entry per image of its loader), got {mask.dtype} {mask.shape}"
                )


@dataclass(frozen=True, eq=False)
class EvalPlan:
    """What one stage ('val' / 'test') evaluates: the landmark count, the NMEs (the first is the primary
    one: FR / AUC, ``<stage>/nme``) and one `LoaderPlan` per loader, in the loaders' order."""

    num_landmarks: int
    metrics: tuple[MetricSpec, ...]
    loaders: tuple[LoaderPlan, ...]

    @property
    def subset_keys(self) -> list[str]:
        """Every subset key of the stage, loader by loader."""
        return [key for loader in self.loaders for key in loader.subsets]


@runtime_checkable
class EvaluationData(Protocol):
    """What `PIPNetModule` reads from its data module, and nothing else.

    ``num_landmarks``: landmarks per face. ``meanface``: (L, 2) crop fractions of the training faces, or None
    (no training data loaded). ``evaluation_plan(stage)``: the `EvalPlan` of 'val' or 'test', after the data
    module's ``setup``.
    """

    @property
    def num_landmarks(self) -> int: ...

    @property
    def meanface(self) -> np.ndarray | None: ...

    def evaluation_plan(self, stage: str) -> EvalPlan: ...


# -- per batch ---------------------------------------------------------------------------------------------
def to_source_pixels(crop: Tensor, boxes_xywh: Tensor) -> Tensor:
    """Landmarks (B, L, 2) as fractions of their crop -> pixels of the source image, for crop boxes (B, 4)
    ``[x0, y0, w, h]`` in source pixels (``denormalize_points``); in ``crop``'s dtype."""
    return denormalize_points(crop, boxes_xywh.to(crop.dtype))


def per_image_nmes(
    pred: Tensor, target: Tensor, boxes_xywh: Tensor, metrics: Sequence[MetricSpec]
) -> dict[str, Tensor]:
    """Each metric's per-image NMEs (B,), by key, for predictions and ground truth (B, L, 2) in crop
    fractions and crop boxes (B, 4) ``[x0, y0, w, h]``.

    Box norms (``box_diag``, ...) measure the error in pixels of the crop box and divide by the box's size;
    the others work on crop fractions (``pipnet_lit.metrics.functional.nme``). float64 (float32 on MPS).
    """
    values = {}
    for spec in metrics:
        if spec.norm in BOX_SIZES:
            dtype = torch.float32 if pred.device.type == "mps" else torch.float64
            wh = boxes_xywh[:, None, 2:4].to(dtype)
            size = box_size(boxes_xywh, spec.norm)
            values[spec.key] = nme(pred.to(dtype) * wh, target.to(dtype) * wh, size)
        else:
            values[spec.key] = nme(pred, target, spec.norm, norm_indices=spec.indices)
    return values


@dataclass(frozen=True)
class BatchScores:
    """The scored part of a batch: ``rows`` (S,) int64 positions in the batch of the images that belong to
    at least one subset (only those are scored), and ``nmes``: key -> (S,) per-image NMEs of those rows."""

    batch_size: int
    rows: Tensor
    nmes: dict[str, Tensor]

    def per_image(self) -> dict[str, Tensor]:
        """key -> (B,) float64 per-image NMEs over the whole batch, NaN for an image in no subset."""
        out = {}
        for key, values in self.nmes.items():
            full = torch.full((self.batch_size,), float("nan"), dtype=torch.float64, device=values.device)
            full[self.rows] = values.to(full.dtype)
            out[key] = full
        return out


def score_batch(
    pred: Tensor,
    target: Tensor,
    boxes_xywh: Tensor,
    index: Tensor,
    subsets: Mapping[str, np.ndarray],
    metrics: Sequence[MetricSpec],
) -> BatchScores:
    """Score the images of a batch that some subset holds.

    pred, target: (B, L, 2) crop fractions; boxes_xywh: (B, 4) crop boxes ``[x0, y0, w, h]``; index: (B,) the
    images' positions in their loader's dataset; subsets: the loader's masks (`LoaderPlan.subsets`).
    """
    scored = np.zeros(len(index), dtype=bool)
    positions = index.cpu().numpy()
    for mask in subsets.values():
        scored |= mask[positions]
    rows = torch.from_numpy(np.flatnonzero(scored)).to(pred.device)
    if len(rows):
        nmes = per_image_nmes(pred[rows], target[rows], boxes_xywh[rows], metrics)
    else:
        nmes = {spec.key: torch.zeros(0, dtype=torch.float64, device=pred.device) for spec in metrics}
    return BatchScores(len(index), rows, nmes)


# -- results -----------------------------------------------------------------------------------------------
@dataclass
class EvalResults:
    """Per-image results of one evaluation pass over a set of images (a loader's pool, or one subset of it).

    Gathered over every DDP rank; one row per image, sorted by ``indices``.

    indices: (N,) int64 positions in the loader's dataset.
    names: the N images' names (the dataset's crop names).
    landmarks_crop: (N, L, 2) float64 predictions, fractions of the crop (0 = left / top edge, 1 = right /
        bottom).
    landmarks: (N, L, 2) float64 predictions in source-image pixels (`to_source_pixels`, crop box).
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


class ResultsCollector(Metric):
    """One loader's per-image evaluation state; torchmetrics gathers it over DDP ranks (``cat``).

    Args:
        keys: the metric keys, in order (the k-th is state ``nme<k>``).
        num_landmarks: landmarks per face (to reshape the flat states).

    Every state is a flat float64 vector (an empty DDP shard then gathers like any other): ``index`` (N,),
    ``crop`` / ``pixels`` (N * L * 2,), ``score`` (N * L,), ``nme<k>`` (N,) for the k-th key.
    """

    full_state_update = False

    def __init__(self, keys: Sequence[str], num_landmarks: int) -> None:
        super().__init__()
        self.metric_keys = list(keys)
        self.num_landmarks = int(num_landmarks)
        for name in self._state_names():
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def _state_names(self) -> tuple[str, ...]:
        return ("index", "crop", "pixels", "score", *(f"nme{k}" for k in range(len(self.metric_keys))))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ResultsCollector:
        # torchmetrics resets the metric's dtype to float32 on any move (`.to(device)`); the states (and the
        # empty state an empty DDP shard sends) stay float64, so every rank gathers the same dtype
        this = super()._apply(fn, *args, **kwargs)
        this._dtype = torch.float64
        return this

    def update(
        self, index: Tensor, crop: Tensor, pixels: Tensor, score: Tensor, nmes: Mapping[str, Tensor]
    ) -> None:
        """Add a batch's scored rows: index (B,), crop / pixels (B, L, 2), score (B, L), nmes key -> (B,)."""
        values = {"index": index, "crop": crop, "pixels": pixels, "score": score}
        values.update({f"nme{k}": nmes[key] for k, key in enumerate(self.metric_keys)})
        for name, value in values.items():
            getattr(self, name).append(value.detach().reshape(-1).to(torch.float64))

    def compute(self) -> dict[str, Tensor]:
        return {name: dim_zero_cat(getattr(self, name)) for name in self._state_names()}

    def gather(self, names: Sequence[str] | None, distributed: bool) -> EvalResults | None:
        """Every rank's rows as one `EvalResults` (None when no image was scored), then reset.

        Under DDP (``distributed``) every rank must call this, even one whose shard was empty: it joins the
        all-gather of ``compute``.
        """
        if not (self.update_called or distributed):
            return None
        state = self.compute()
        self.reset()
        if state["index"].numel() == 0:
            return None
        return collected_results(state, self.num_landmarks, self.metric_keys, names)


def collected_results(
    state: Mapping[str, Tensor], num_landmarks: int, keys: Sequence[str], names: Sequence[str] | None
) -> EvalResults:
    """An `EvalResults` from a `ResultsCollector`'s gathered state, sorted by image index.

    ``names``: the loader's image names by dataset index (None: the index as a string).
    """
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


def split_subsets(results: EvalResults, subsets: Mapping[str, np.ndarray]) -> dict[str, EvalResults]:
    """A loader's results split into its subsets (key -> rows whose image the subset's mask holds), in the
    subsets' order; a subset without any scored image is left out."""
    out = {}
    for key, mask in subsets.items():
        keep = mask[results.indices]
        if keep.any():
            out[key] = results.select(keep)
    return out


def subset_summary(
    results: EvalResults, keys: Sequence[str], fr_threshold: float = 0.1, auc_step: float = 1e-4
) -> dict[str, float]:
    """Mean NME per key and, for the primary (first) key only, failure rate and AUC at ``fr_threshold``.

    Keys: ``nme_io``, ... then ``fr@0.10`` and ``auc@0.10`` (the threshold with two decimals) right after
    the primary key.
    """
    values: dict[str, float] = {}
    for key in keys:
        values[key] = float(results.nmes[key].mean())
        if key == keys[0]:
            fr, auc = fr_auc(results.nmes[key], fr_threshold, auc_step)
            values[f"fr@{fr_threshold:.2f}"] = fr
            values[f"auc@{fr_threshold:.2f}"] = auc
    return values
