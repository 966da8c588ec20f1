"""PIPNet method math as pure tensor functions: mean face, neighbours, targets, loss and decoding."""

from pipnet_lit.pip.decode import DecodeResult, decode, decode_details
from pipnet_lit.pip.loss import CLS_LOSSES, REG_LOSSES, PIPLoss, gather_at_cells, pip_loss
from pipnet_lit.pip.meanface import compute_meanface
from pipnet_lit.pip.neighbors import Neighbors, build_neighbors
from pipnet_lit.pip.targets import encode_targets
from pipnet_lit.pip.types import PIPOutputs, PIPTargets

__all__ = [
    "CLS_LOSSES",
    "REG_LOSSES",
    "DecodeResult",
    "Neighbors",
    "PIPLoss",
    "PIPOutputs",
    "PIPTargets",
    "build_neighbors",
    "compute_meanface",
    "decode",
    "decode_details",
    "encode_targets",
    "gather_at_cells",
    "pip_loss",
]
