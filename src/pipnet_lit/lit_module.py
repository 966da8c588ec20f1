"""`PIPNetModule`: the LightningModule that wires network, targets, loss, decoding and metrics.

All method math lives in `pipnet_lit.pip` and `pipnet_lit.metrics`; this module only connects it to
Lightning's hooks. The mean face (and so the neighbour indices) is module state: it is taken from the
datamodule's training set before the first fit and travels inside every checkpoint (the state dict's
`_extra_state`), so evaluation and prediction need no training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from pipnet_lit.datasets.geometry import denormalize_points
from pipnet_lit.metrics import LandmarkMetrics
from pipnet_lit.metrics.functional import BOX_SIZES, box_size
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import (
    Neighbors,
    build_neighbors,
    curriculum_loss,
    decode,
    encode_curriculum_targets,
    encode_targets,
    pip_loss,
)


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
        self._neighbors: Neighbors | None = None
        # per stage ('val' / 'test' / 'predict'): for each loader, subset key -> mask over its images
        self._layouts: dict[str, list[dict[str, np.ndarray]]] = {}
        self._metric_specs: list[dict[str, Any]] = list(metrics or [])
        self.metrics = torch.nn.ModuleDict()
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
        self._neighbors = None

    def get_extra_state(self) -> dict[str, Any]:
        return {"meanface": self.meanface}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("meanface") is None:
            self.meanface, self._neighbors = None, None
        else:
            self.set_meanface(state["meanface"])

    @property
    def neighbors(self) -> Neighbors:
        if self.meanface is None:
            raise RuntimeError(
                "the model has no mean face yet: train it with a datamodule (which provides one), load a "
                "checkpoint, or call set_meanface(meanface)"
            )
        if self._neighbors is None or self._neighbors.indices.device != self.device:
            self._neighbors = build_neighbors(self.meanface, self.hparams.num_nb).to(self.device)
        return self._neighbors

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
        else:
            self._layouts = {}
        if not self._metric_specs:
            self._metric_specs = [{"key": "nme_raw", "norm": "none", "indices": None}]
        for layout in self._layouts.values():
            for name in (key for loader in layout for key in loader):
                if name not in self.metrics:
                    self.metrics[name] = torch.nn.ModuleDict(
                        {spec["key"]: self._new_metric(spec) for spec in self._metric_specs}
                    )

    def _new_metric(self, spec: dict[str, Any]) -> LandmarkMetrics:
        hp = self.hparams
        # box norms are scored in pixels with per-sample norms (update's norm_values)
        norm = "none" if spec["norm"] in BOX_SIZES else spec["norm"]
        return LandmarkMetrics(
            norm=norm, norm_indices=spec.get("indices"), threshold=hp.fr_threshold, step=hp.auc_step
        )

    # -- forward / decode --------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Any:
        """Raw head outputs (`PIPOutputs`) for ImageNet-normalized RGB images (B, 3, S, S)."""
        return self.net(images)

    def predict_landmarks(self, images: Tensor) -> Tensor:
        """(B, L, 2) landmarks, normalized to [0, 1] of the input crop."""
        out = self.net(images)
        return decode(out, self.neighbors, merge=self.hparams.merge)

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
    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int, stage: str) -> None:
        """One forward per batch; every subset of this loader scores its own rows with every NME."""
        pred = self.predict_landmarks(batch["image"])
        layout = self._layouts.get(stage)
        if not layout:
            raise RuntimeError(
                "evaluation needs a LandmarkDataModule (it says which subsets each loader holds)"
            )
        index = batch["index"].cpu().numpy()
        for name, mask in layout[dataloader_idx].items():
            rows = torch.from_numpy(np.flatnonzero(mask[index])).to(pred.device)
            if rows.numel() == 0:
                continue
            p, t, box = pred[rows], batch["landmarks"][rows], batch["box"][rows]
            for spec in self._metric_specs:
                metric = self.metrics[name][spec["key"]]
                if spec["norm"] in BOX_SIZES:  # pixels of the crop box, divided by the box's size
                    dtype = torch.float32 if p.device.type == "mps" else torch.float64
                    wh = box[:, None, 2:4].to(dtype)
                    metric.update(p.to(dtype) * wh, t.to(dtype) * wh, norm_values=box_size(box, spec["norm"]))
                else:
                    metric.update(p, t)

    def _eval_epoch_end(self, stage: str) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        distributed = self.trainer.world_size > 1
        names = [key for loader in self._layouts.get(stage, []) for key in loader]
        primary = self._metric_specs[0]["key"]
        for name in names:
            values: dict[str, float] = {}
            for spec in self._metric_specs:
                metric = self.metrics[name][spec["key"]]
                # under DDP every rank must join compute()'s all-gather, even one whose shard was empty
                if not (metric.update_called or distributed):
                    continue
                computed = metric.compute()
                metric.reset()
                values[spec["key"]] = float(computed["nme"])
                if spec["key"] == primary:
                    values.update({k: float(v) for k, v in computed.items() if k != "nme"})
            if not values:
                continue
            results[name] = values
            for key, value in values.items():
                # compute() gathered every rank's per-sample NMEs already: the values agree across ranks
                self.log(f"{stage}/{name}/{key}", value, add_dataloader_idx=False, sync_dist=False)
        if results:
            first = next(iter(results.values()))
            self.log(f"{stage}/nme", first[primary], prog_bar=True, add_dataloader_idx=False)
        return results

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx, "test")

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
