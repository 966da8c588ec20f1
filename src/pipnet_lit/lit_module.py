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

from pipnet_lit.metrics import LandmarkMetrics
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import Neighbors, build_neighbors, decode, encode_targets, pip_loss

#: Short tags used in metric keys, so every key names its normalization (e.g. `test/300w_full/nme_io`).
NORM_TAGS = {"inter_ocular": "io", "inter_pupil": "ip", "bbox": "box", "diag": "diag", "none": "raw"}


class PIPNetModule(L.LightningModule):
    """PIPNet training / evaluation / prediction.

    Args:
        backbone, num_landmarks, num_nb, net_stride, input_size, pretrained: the network (`PIPNet`).
        cls_loss, reg_loss, cls_weight, reg_weight: the loss (`pip_loss`); paper: l2, l1, 10, 1.
        lr, weight_decay, milestones, gamma: Adam + MultiStepLR; paper: 1e-4, -, [30, 50], 0.1.
            weight_decay None follows the official rule: 5e-4 when training from scratch, 0 when pretrained.
        norm: NME normalization ('inter_ocular', 'inter_pupil', 'bbox', 'diag', 'none').
        norm_indices: the two landmark index groups for inter_ocular / inter_pupil (from the dataset's
            landmark scheme; filled in from the datamodule when left empty).
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
        cls_loss: str = "l2",
        reg_loss: str = "l1",
        cls_weight: float = 10.0,
        reg_weight: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float | None = None,
        milestones: Sequence[int] = (30, 50),
        gamma: float = 0.1,
        norm: str = "inter_ocular",
        norm_indices: Sequence[Sequence[int]] | None = None,
        fr_threshold: float = 0.1,
        auc_step: float = 1e-4,
        merge: bool = True,
    ) -> None:
        super().__init__()
        if norm not in NORM_TAGS:
            raise ValueError(f"model.norm={norm!r} is not one of {sorted(NORM_TAGS)}")
        # plain Python containers (not Hydra's ListConfig) so checkpoints load with weights_only=True
        milestones = [int(m) for m in milestones]
        norm_indices = (
            [[int(i) for i in group] for group in norm_indices] if norm_indices is not None else None
        )
        self.save_hyperparameters()
        self.net = PIPNet(
            backbone=backbone,
            num_landmarks=num_landmarks,
            num_nb=num_nb,
            net_stride=net_stride,
            pretrained=pretrained,
            input_size=input_size,
        )
        # The mean face is "extra state", not a buffer: it stays float64 on the CPU whatever precision or
        # device the network is moved to (a bf16 cast would silently change the neighbour indices).
        self.meanface: Tensor | None = None
        self._neighbors: Neighbors | None = None
        self._subsets: list[str] = []
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
            if self.hparams.norm_indices is None and self.hparams.norm in ("inter_ocular", "inter_pupil"):
                self.hparams.norm_indices = [
                    list(g) for g in dm.meta.landmarks.norm_indices(self.hparams.norm)
                ]
            names = list(dm.eval_subset_names)
        else:
            names = ["eval"]
        self._subsets = names
        for name in names:
            if name not in self.metrics:
                self.metrics[name] = self._new_metric()

    def _new_metric(self) -> LandmarkMetrics:
        hp = self.hparams
        indices = [list(g) for g in hp.norm_indices] if hp.norm_indices is not None else None
        return LandmarkMetrics(
            norm=hp.norm, norm_indices=indices, threshold=hp.fr_threshold, step=hp.auc_step
        )

    # -- forward / decode --------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Any:
        """Raw head outputs (`PIPOutputs`) for ImageNet-normalized RGB images (B, 3, S, S)."""
        return self.net(images)

    def predict_landmarks(self, images: Tensor) -> Tensor:
        """(B, L, 2) landmarks, normalized to [0, 1] of the input crop."""
        out = self.net(images)
        return decode(*out, self.neighbors, merge=self.hparams.merge)

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.net(batch["image"])
        targets = encode_targets(batch["landmarks"], self.neighbors, tuple(out.score.shape[-2:]))
        hp = self.hparams
        loss = pip_loss(
            out,
            targets,
            cls_loss=hp.cls_loss,
            reg_loss=hp.reg_loss,
            cls_weight=hp.cls_weight,
            reg_weight=hp.reg_weight,
        )
        batch_size = batch["image"].shape[0]
        self.log("train/loss", loss.total, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/loss_{k}": getattr(loss, k) for k in ("cls", "x", "y", "nb_x", "nb_y")},
            batch_size=batch_size,
        )
        return loss.total

    # -- evaluation --------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        pred = self.predict_landmarks(batch["image"])
        self.metrics[self._subsets[dataloader_idx]].update(pred, batch["landmarks"])

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        tag = NORM_TAGS[self.hparams.norm]
        results: dict[str, dict[str, float]] = {}
        distributed = self.trainer.world_size > 1
        for name in self._subsets:
            metric = self.metrics[name]
            # under DDP every rank must join compute()'s all-gather, even one whose shard was empty
            if not (metric.update_called or distributed):
                continue
            values = {(f"nme_{tag}" if k == "nme" else k): float(v) for k, v in metric.compute().items()}
            metric.reset()
            results[name] = values
            for key, value in values.items():
                # compute() gathered every rank's per-sample NMEs already: the values agree across ranks
                self.log(f"{stage}/{name}/{key}", value, add_dataloader_idx=False, sync_dist=False)
        if results:
            first = next(iter(results.values()))
            self.log(f"{stage}/nme", first[f"nme_{tag}"], prog_bar=True, add_dataloader_idx=False)
        return results

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._eval_epoch_end("test")

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Landmarks in the source image's pixels (the annotation's convention) and in crop coordinates."""
        pred = self.predict_landmarks(batch["image"])
        box = batch["box"].to(pred.dtype)
        pixels = pred * box[:, None, 2:] + box[:, None, :2]
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
