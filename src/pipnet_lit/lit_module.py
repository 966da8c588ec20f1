"""`PIPNetModule`: the LightningModule that wires network, targets, loss, decoding and metrics.

All method math lives in `pipnet_lit.pip` and `pipnet_lit.metrics`; this module only connects it to
Lightning's hooks. The mean face (and so the neighbour indices) is module state: it is taken from the
datamodule's training set before the first fit and travels inside every checkpoint (the state dict's
`_extra_state`), so evaluation and prediction need no training data.

Evaluation is one pass: each validation / test step decodes its batch once and returns (and collects,
gathered over DDP ranks) the predictions, per-image NMEs and max-scores; the metrics, the per-image CSV, the
CED plots and the prediction grids all read that pass (`EvalResults`, `PIPNetModule.eval_results`). The
scoring itself lives in `pipnet_lit.evaluation` (no Lightning); the datamodule says what to score through one
named contract (`EvaluationData`: ``num_landmarks``, ``meanface``, ``evaluation_plan(stage)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor

from pipnet_lit.evaluation import (
    DEFAULT_METRICS,
    EvalPlan,
    EvalResults,
    EvaluationData,
    MetricSpec,
    ResultsCollector,
    metric_spec,
    score_batch,
    split_subsets,
    subset_summary,
    to_source_pixels,
)
from pipnet_lit.inference import Predictor
from pipnet_lit.landmark_graph import LandmarkGraph
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import (
    Neighbors,
    curriculum_loss,
    encode_curriculum_targets,
    encode_targets,
    pip_loss,
)

__all__ = ["EvalResults", "NonFiniteLossError", "PIPNetModule"]  # EvalResults: from pipnet_lit.evaluation

#: What `PIPNetModule` does with a NaN / inf training loss (``nonfinite_loss``).
NONFINITE_LOSS_ACTIONS = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """A training loss that is NaN or inf (``nonfinite_loss="stop"``); the message names the epoch, the batch
    and the global step."""


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
        nonfinite_loss: a NaN / inf training loss ``"stop"``s training with `NonFiniteLossError` naming the
            epoch, the batch and the global step (default), or is ``"skip"``ped: no backward, no optimizer
            step, the batch-norm statistics the batch changed restored, counted in ``train/skipped_nonfinite``
            and warned about. ``"skip"`` works on one process only: under DDP every rank must take the same
            step, and Lightning refuses a skipped step when ``world_size > 1``, so it is refused there.
        channels_last: keep the network's weights and the batches NHWC (``torch.channels_last``); faster with
            ``trainer.precision=bf16-mixed`` on CPUs with AVX-512 BF16 / AMX and on GPUs. Numbers change by
            rounding only.
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
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        channels_last: bool = False,
    ) -> None:
        if nonfinite_loss not in NONFINITE_LOSS_ACTIONS:
            raise ValueError(
                f"nonfinite_loss must be one of {NONFINITE_LOSS_ACTIONS}, got {nonfinite_loss!r}"
            )
        super().__init__()
        # plain Python containers (not Hydra's ListConfig) so checkpoints load with weights_only=True
        milestones = [int(m) for m in milestones]
        metrics = None if metrics is None else [_plain_metric(m) for m in metrics]
        self.save_hyperparameters()
        self.net = PIPNet.from_settings(self.hparams, pretrained=pretrained)
        if (
            channels_last
        ):  # NHWC convolutions: faster on CPUs (oneDNN) and tensor cores, with bf16 most of all
            self.net = self.net.to(memory_format=torch.channels_last)
        # The mean face is "extra state", not a buffer: it stays float64 on the CPU whatever precision or
        # device the network is moved to (a bf16 cast would silently change the neighbour indices).
        self.meanface: Tensor | None = None
        # the inference core, built on first use from net + mean face; set with object.__setattr__ so that
        # it is no submodule (its network is `net`, and its tables must not enter the checkpoint)
        self._set_graph(None)
        # per stage ('val' / 'test'): what each loader holds and which subsets are scored on it
        self._plans: dict[str, EvalPlan] = {}
        self._metric_specs: tuple[MetricSpec, ...] = tuple(metric_spec(m) for m in metrics or ())
        # per stage, one collector per loader ("<stage>_<loader>"): the evaluation pass's per-image state
        self.collectors = torch.nn.ModuleDict()
        # after each evaluation epoch: stage -> subset key -> per-image results (every rank holds all)
        self.eval_results: dict[str, dict[str, EvalResults]] = {}
        self.test_results: dict[str, dict[str, float]] = {}
        self.example_input_array = torch.zeros(1, 3, input_size, input_size)
        #: training batches skipped for a non-finite loss (``nonfinite_loss="skip"``), in this process
        self.skipped_nonfinite = 0

    # -- mean face and neighbours -----------------------------------------------------------------
    def set_meanface(self, meanface: np.ndarray | Tensor) -> None:
        """Fix the mean face (L, 2), normalized crop coordinates, that defines each landmark's neighbours."""
        mf = torch.as_tensor(np.asarray(meanface), dtype=torch.float64).cpu().clone()
        expected = (self.hparams.num_landmarks, 2)
        if tuple(mf.shape) != expected:
            raise ValueError(f"mean face of shape {tuple(mf.shape)}; this model needs {expected}")
        self.meanface = mf
        self._set_graph(None)

    def get_extra_state(self) -> dict[str, Any]:
        return {"meanface": self.meanface}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("meanface") is None:
            self.meanface = None
            self._set_graph(None)
        else:
            self.set_meanface(state["meanface"])

    @property
    def neighbors(self) -> Neighbors:
        """The mean face's neighbour tables on this module's device (they follow the network, which Lightning
        moved already)."""
        return self.graph.neighbors(self.device)

    @property
    def graph(self) -> LandmarkGraph:
        """The inference core (`pipnet_lit.landmark_graph.LandmarkGraph`) of this module's network and mean
        face, sharing the network: evaluation decodes through it, as every other consumer does."""
        if self.meanface is None:
            raise RuntimeError(
                "the model has no mean face yet: train it with a datamodule (which provides one), load a "
                "checkpoint, or call set_meanface(meanface)"
            )
        if self._graph is None:
            self._set_graph(LandmarkGraph(self.net, self.meanface, merge=self.hparams.merge))
        return self._graph

    def _set_graph(self, graph: LandmarkGraph | None) -> None:
        object.__setattr__(self, "_graph", graph)

    @property
    def predictor(self) -> Predictor:
        """This module's model as a `pipnet_lit.inference.Predictor` (sharing network and graph)."""
        return Predictor(self.graph)

    # -- set-up from the datamodule ----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            if not isinstance(dm, EvaluationData):
                raise TypeError(
                    "PIPNetModule needs a datamodule with num_landmarks, meanface and evaluation_plan(stage) "
                    f"(the EvaluationData contract of pipnet_lit.evaluation), got {type(dm).__name__}"
                )
            if dm.num_landmarks != self.hparams.num_landmarks:
                raise ValueError(
                    f"the data has {dm.num_landmarks} landmarks but model.num_landmarks="
                    f"{self.hparams.num_landmarks}; set model.num_landmarks={dm.num_landmarks}"
                )
            if self.meanface is None and dm.meanface is not None:
                self.set_meanface(dm.meanface)
            self._plans = {s: dm.evaluation_plan(s) for s in ("val", "test")}
            if self.hparams.metrics is None:
                self._metric_specs = self._plans["test"].metrics
        else:
            self._plans = {}
        if not self._metric_specs:
            self._metric_specs = DEFAULT_METRICS
        keys = self.metric_keys
        for stage, plan in self._plans.items():
            for i in range(len(plan.loaders)):
                name = f"{stage}_{i}"
                if name not in self.collectors or self.collectors[name].metric_keys != keys:
                    self.collectors[name] = ResultsCollector(keys, self.hparams.num_landmarks)

    @property
    def metric_keys(self) -> list[str]:
        """The NME keys scored on every evaluation subset (``nme_io``, ...); the first is the primary one."""
        return [spec.key for spec in self._metric_specs]

    def image_names(self, stage: str, dataloader_idx: int = 0) -> list[str] | None:
        """Names of the images of loader ``dataloader_idx`` of ``stage`` ('val' / 'test'); None if unknown."""
        plan = self._plans.get(stage)
        if plan is None or dataloader_idx >= len(plan.loaders):
            return None
        return list(plan.loaders[dataloader_idx].names)

    # -- forward / decode --------------------------------------------------------------------------
    def _images(self, batch: dict[str, Tensor] | Tensor) -> Tensor:
        """A batch's images (B, 3, S, S), channels-last when the network is (``channels_last``)."""
        images = batch["image"] if isinstance(batch, dict) else batch
        if self.hparams.get("channels_last"):
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: Tensor) -> Any:
        """Raw head outputs (`PIPOutputs`) for ImageNet-normalized RGB images (B, 3, S, S)."""
        return self.net(images)

    def predict_landmarks(self, images: Tensor) -> Tensor:
        """(B, L, 2) landmarks, normalized to [0, 1] of the input crop."""
        return self.graph.landmarks(self._images(images)).landmarks

    def _landmarks_and_scores(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """One forward + decode: (B, L, 2) crop-normalized landmarks and (B, L) winning raw scores."""
        out = self.graph.landmarks(self._images(images))
        return out.landmarks, out.scores

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        """The PIP loss; with a batch ``task`` tensor (self-training) that is not all ``std``, the
        curriculum loss, each sample supervising the maps of its task (std / cls2 / cls3).

        A NaN / inf loss raises `NonFiniteLossError` (``nonfinite_loss="stop"``) or returns None
        (``"skip"``), which Lightning's automatic optimization takes as "no backward, no optimizer step"."""
        skip = self.hparams.get("nonfinite_loss", "stop") == "skip"
        distributed = self._trainer is not None and self.trainer.world_size > 1
        if skip and distributed:
            raise ValueError(
                "model.nonfinite_loss=skip works on one process only: under DDP every rank must take the "
                "same optimizer step (Lightning refuses a skipped step when world_size > 1); use "
                "model.nonfinite_loss=stop"
            )
        # a skipped batch must leave no trace: its forward pass updates the batch-norm running statistics
        saved = [b.detach().clone() for b in self.net.buffers()] if skip else None
        out = self.net(self._images(batch)).float()  # losses and targets in fp32 under bf16 autocast
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
        total = loss.total.detach()
        bad = ~torch.isfinite(total)
        if distributed:  # every rank stops together (one that raised alone would leave the others waiting)
            bad = self.trainer.strategy.reduce(bad.float(), reduce_op="sum") > 0
        if bool(bad):  # one host sync per step
            parts = ", ".join(
                f"{k}={float(getattr(loss, k).detach()):.4g}" for k in ("cls", "x", "y", "nb_x", "nb_y")
            )
            where = (
                f"epoch {self.current_epoch}, batch {batch_idx} of the epoch (global step {self.global_step})"
            )
            if not skip:
                if bool(torch.isfinite(total)):
                    raise NonFiniteLossError(
                        f"the training loss of another DDP rank is NaN or inf at {where} (its message names "
                        f"the cause; the loss here, rank {self.global_rank}, is {float(total):.4g})"
                    )
                raise NonFiniteLossError(
                    f"the training loss is {float(total)} at {where}; its parts: {parts}. A NaN / inf "
                    "in the batch (images, landmarks) or weights that diverged (lower model.lr)? "
                    "model.nonfinite_loss=skip skips such batches instead"
                )
            with torch.no_grad():
                for buffer, old in zip(self.net.buffers(), saved, strict=True):
                    buffer.copy_(old)
            self.skipped_nonfinite += 1
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), batch_size=batch_size)
            warnings.warn(
                f"skipped a training batch with a non-finite loss ({float(total)}) at {where}; its "
                f"parts: {parts} ({self.skipped_nonfinite} skipped so far)",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        self.log("train/loss", loss.total, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/loss_{k}": getattr(loss, k) for k in ("cls", "x", "y", "nb_x", "nb_y")},
            batch_size=batch_size,
        )
        return loss.total

    # -- evaluation --------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int, stage: str) -> dict[str, Any]:
        """One forward and decode per batch; stashes the batch's per-image results for the epoch's end.

        Returns the batch's evaluation pass, for callbacks (``on_*_batch_end``): ``index`` (B,),
        ``landmarks_crop`` (B, L, 2) crop fractions, ``landmarks`` (B, L, 2) source-image pixels,
        ``max_score`` (B, L), and ``nme``: key -> (B,) per-image NMEs (NaN for an image in no subset).
        """
        plan = self._plans.get(stage)
        if plan is None or not plan.loaders:
            raise RuntimeError(
                "evaluation needs a LandmarkDataModule (its evaluation_plan says which subsets each loader "
                "holds)"
            )
        pred, max_score = self._landmarks_and_scores(batch["image"])
        pixels = to_source_pixels(pred, batch["box"])
        index = batch["index"]
        subsets = plan.loaders[dataloader_idx].subsets
        scores = score_batch(pred, batch["landmarks"], batch["box"], index, subsets, self._metric_specs)
        rows = scores.rows
        if len(rows):
            self.collectors[f"{stage}_{dataloader_idx}"].update(
                index[rows], pred[rows], pixels[rows], max_score[rows], scores.nmes
            )
        return {
            "index": index,
            "landmarks_crop": pred,
            "landmarks": pixels,
            "max_score": max_score,
            "nme": scores.per_image(),
        }

    def _eval_epoch_end(self, stage: str) -> dict[str, dict[str, float]]:
        """Gather the pass, split it into subsets, score them, log ``<stage>/<subset>/<key>``."""
        results: dict[str, dict[str, float]] = {}
        per_subset: dict[str, EvalResults] = {}
        distributed = self.trainer.world_size > 1
        keys = self.metric_keys
        hp = self.hparams
        plan = self._plans.get(stage)
        for i, loader in enumerate(plan.loaders if plan is not None else ()):
            pooled = self.collectors[f"{stage}_{i}"].gather(loader.names, distributed)
            if pooled is None:
                continue
            for name, subset in split_subsets(pooled, loader.subsets).items():
                per_subset[name] = subset
                results[name] = subset_summary(subset, keys, hp.fr_threshold, hp.auc_step)
        self.eval_results[stage] = per_subset
        for name, values in results.items():
            for key, value in values.items():
                # the collectors gathered every rank's images already: the values agree across ranks
                self.log(f"{stage}/{name}/{key}", value, add_dataloader_idx=False, sync_dist=False)
        if results:
            first = next(iter(results.values()))
            self.log(f"{stage}/nme", first[keys[0]], prog_bar=True, add_dataloader_idx=False)
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
        pixels = to_source_pixels(pred, batch["box"])
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
    return metric_spec(spec).as_dict()
