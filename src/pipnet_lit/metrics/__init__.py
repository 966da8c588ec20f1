"""Landmark metrics as pure functions (`functional`): per-image NME, the CED curve, FR / AUC.

Collecting them over an evaluation pass (and over DDP ranks) is `pipnet_lit.evaluation`'s job.
"""

from pipnet_lit.metrics import functional
from pipnet_lit.metrics.functional import fr_auc, nme

__all__ = ["fr_auc", "functional", "nme"]
