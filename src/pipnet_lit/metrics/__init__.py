"""Landmark metrics: pure functions (`functional`) and torchmetrics wrappers (`landmark`)."""

from pipnet_lit.metrics import functional
from pipnet_lit.metrics.functional import fr_auc, nme
from pipnet_lit.metrics.landmark import AUC, NME, FailureRate, LandmarkMetrics, LandmarkNMEState

__all__ = ["AUC", "NME", "FailureRate", "LandmarkMetrics", "LandmarkNMEState", "fr_auc", "functional", "nme"]
