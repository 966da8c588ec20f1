"""PIPNet method math as pure tensor functions: mean face, neighbours, targets, losses and decoding."""

from pipnet_lit.pip.decode import DecodeResult, decode, decode_details
from pipnet_lit.pip.loss import (
    CLS_LOSSES,
    CURRICULUM_CLS_LOSSES,
    REG_LOSSES,
    PIPLoss,
    curriculum_loss,
    gather_at_cells,
    pip_loss,
)
from pipnet_lit.pip.meanface import compute_meanface
from pipnet_lit.pip.neighbors import Neighbors, build_neighbors
from pipnet_lit.pip.targets import COARSE_FACTORS, TASKS, encode_curriculum_targets, encode_targets, task_ids
from pipnet_lit.pip.types import CurriculumTargets, PIPOutputs, PIPTargets

__all__ = [
    "CLS_LOSSES",
    "COARSE_FACTORS",
    "CURRICULUM_CLS_LOSSES",
    "REG_LOSSES",
    "TASKS",
    "CurriculumTargets",
    "DecodeResult",
    "Neighbors",
    "PIPLoss",
    "PIPOutputs",
    "PIPTargets",
    "build_neighbors",
    "compute_meanface",
    "curriculum_loss",
    "decode",
    "decode_details",
    "encode_curriculum_targets",
    "encode_targets",
    "gather_at_cells",
    "pip_loss",
    "task_ids",
]
