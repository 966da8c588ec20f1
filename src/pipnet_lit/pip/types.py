"""Containers shared by the PIP head, its targets, the loss and the decoder.

Shapes: B batch, L landmarks, N = L * num_nb neighbour channels (landmark-major: channel i * num_nb + j
is neighbour j of landmark i), H x W the head's grid.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor


class PIPOutputs(NamedTuple):
    """Raw head outputs, in the official order (cls, x, y, nb_x, nb_y). A tuple so it traces and exports."""

    score: Tensor  # (B, L, H, W)
    offset_x: Tensor  # (B, L, H, W)
    offset_y: Tensor  # (B, L, H, W)
    nb_x: Tensor  # (B, N, H, W)
    nb_y: Tensor  # (B, N, H, W)


@dataclass
class PIPTargets:
    """Training targets on one grid (see `pipnet_lit.pip.encode_targets`).

    score/offset_x/offset_y: (B, L, H, W); nb_x/nb_y: (B, N, H, W); cell: (B, L) flat index y * W + x of
    each landmark's ground-truth cell (the argmax of `score`).
    """

    score: Tensor
    offset_x: Tensor
    offset_y: Tensor
    nb_x: Tensor
    nb_y: Tensor
    cell: Tensor

    def to(self, device: torch.device | str) -> PIPTargets:
        return PIPTargets(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
