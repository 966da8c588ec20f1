"""torchmetrics wrappers. The state is the list of per-sample NMEs: NME, FR and AUC are exact, also under DDP.

Use one instance per evaluation subset. `LandmarkMetrics` gives all three numbers from one state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from pipnet_lit.metrics.functional import IndexSpec, fr_auc, nme


class LandmarkNMEState(Metric):
    """Base metric collecting per-sample NMEs (state `nmes`, dist_reduce_fx="cat", kept in float64).

    Args:
        norm: normalization passed to `pipnet_lit.metrics.functional.nme` ("inter_ocular", "inter_pupil",
            "bbox", "diag", "none" or a positive number).
        norm_indices: the two index groups of inter_ocular / inter_pupil (from the landmark scheme).
    """

    is_differentiable = False
    higher_is_better: bool | None = False
    full_state_update = False

    def __init__(
        self, norm: str | float = "inter_ocular", norm_indices: IndexSpec | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.norm = norm
        self.norm_indices = norm_indices
        self.add_state("nmes", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(self, pred: Tensor, target: Tensor, norm_values: Tensor | None = None) -> None:
        """Add a batch: pred, target (B, L, 2); norm_values (B,) per-sample norms overriding `norm`."""
        norm = norm_values if norm_values is not None else self.norm
        values = nme(pred, target, norm, norm_indices=self.norm_indices)
        self.nmes.append(values.to(self.dtype))

    def per_sample(self) -> Tensor:
        """All per-sample NMEs seen so far (N,), in update order (after a DDP sync: rank by rank)."""
        state = self.nmes
        if isinstance(state, Tensor):
            return state
        if not state:
            return torch.zeros(0, dtype=self.dtype, device=self.device)
        return dim_zero_cat(state)

    def _values(self) -> Tensor:
        values = self.per_sample()
        if values.numel() == 0:
            raise RuntimeError(f"{type(self).__name__}.compute(): no samples were added (call update first)")
        return values

    def _scalar(self, value: float | Tensor) -> Tensor:
        return torch.as_tensor(value, dtype=torch.float64, device=self.device)

    def compute(self) -> Any:
        return self._values().mean()


class NME(LandmarkNMEState):
    """Mean per-sample NME (0-dim float64 tensor)."""


class FailureRate(LandmarkNMEState):
    """Fraction of samples with NME above the official curve's last x (official compute_fr_and_auc)."""

    def __init__(self, threshold: float = 0.1, step: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.step = step

    def compute(self) -> Tensor:
        return self._scalar(fr_auc(self._values(), self.threshold, self.step)[0])


class AUC(LandmarkNMEState):
    """Area under the cumulative error curve up to `threshold`, / threshold (official compute_fr_and_auc)."""

    higher_is_better = True

    def __init__(self, threshold: float = 0.1, step: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.step = step

    def compute(self) -> Tensor:
        return self._scalar(fr_auc(self._values(), self.threshold, self.step)[1])


class LandmarkMetrics(LandmarkNMEState):
    """NME, FR and AUC from one set of per-sample NMEs.

    compute() returns {"nme": ..., f"fr@{threshold:.2f}": ..., f"auc@{threshold:.2f}": ...} (0-dim float64
    tensors); prefix the keys with the subset / normalization when logging.
    """

    higher_is_better = None

    def __init__(self, threshold: float = 0.1, step: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.step = step

    def compute(self) -> dict[str, Tensor]:
        values = self._values()
        fr, auc = fr_auc(values, self.threshold, self.step)
        return {
            "nme": values.mean(),
            f"fr@{self.threshold:.2f}": self._scalar(fr),
            f"auc@{self.threshold:.2f}": self._scalar(auc),
        }
