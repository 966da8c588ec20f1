"""Containers shared by the PIP head, its targets, the loss and the decoder.

Shapes: B batch, L landmarks, N = L * num_nb neighbour channels (landmark-major: channel i * num_nb + j
is neighbour j of landmark i), H x W the head's grid; the coarse score maps of the curriculum network sit on
grids 2x and 4x coarser (H/2 x W/2, H/4 x W/4).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor


class PIPOutputs(NamedTuple):
    """Raw head outputs, in the official order (cls, x, y, nb_x, nb_y). A tuple so it traces and exports.

    `score_coarse` holds the score maps the curriculum network (`PIPNet(coarse_levels=2)`) computes on the
    features max-pooled 2x2 once and twice: ((B, L, H/2, W/2), (B, L, H/4, W/4)), in that order; empty for
    the supervised network. Unpacking a record gives six values: pass the record itself to `decode`.
    """

    score: Tensor  # (B, L, H, W)
    offset_x: Tensor  # (B, L, H, W)
    offset_y: Tensor  # (B, L, H, W)
    nb_x: Tensor  # (B, N, H, W)
    nb_y: Tensor  # (B, N, H, W)
    score_coarse: tuple[Tensor, ...] = ()  # (B, L, H/2, W/2), (B, L, H/4, W/4) or ()

    def float(self) -> PIPOutputs:
        """The maps in float32 (from bf16 / fp16 autocast): losses, targets and decoding stay in fp32. The
        record itself when they are float32 already (nothing is copied, nothing recorded in a trace)."""
        if self.score.dtype == torch.float32 and all(t.dtype == torch.float32 for t in self.score_coarse):
            return self
        maps = [t.float() for t in self[:5]]
        return PIPOutputs(*maps, tuple(t.float() for t in self.score_coarse))


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


@dataclass
class CurriculumTargets:
    """Targets of the curriculum self-training loss (see `pipnet_lit.pip.encode_curriculum_targets`).

    score/offset_x/offset_y/nb_x/nb_y/cell: exactly `encode_targets` on the full (H, W) grid, every sample.
    score_coarse: one-hot maps on the 2x and 4x coarser grids, ((B, L, H/2, W/2), (B, L, H/4, W/4)), every
        sample, in the order of `PIPOutputs.score_coarse`.
    task: (B,) long index into `TASKS` ("std", "cls2", "cls3").
    map_mask: (B, 3) bool, column k = the sample supervises score map k (0 full grid, 1 2x-coarser,
        2 4x-coarser); exactly one True per row, the column equals `task`. Column 0 also gates the offset
        and neighbour terms (`reg_mask`).
    """

    score: Tensor
    offset_x: Tensor
    offset_y: Tensor
    nb_x: Tensor
    nb_y: Tensor
    cell: Tensor
    score_coarse: tuple[Tensor, ...]
    task: Tensor
    map_mask: Tensor

    @property
    def reg_mask(self) -> Tensor:
        """(B,) bool: samples whose offsets and neighbours are supervised (the `std` samples)."""
        return self.map_mask[:, 0]

    def pip_targets(self) -> PIPTargets:
        """The full-grid fields as `PIPTargets` (what `pip_loss` takes)."""
        return PIPTargets(
            score=self.score,
            offset_x=self.offset_x,
            offset_y=self.offset_y,
            nb_x=self.nb_x,
            nb_y=self.nb_y,
            cell=self.cell,
        )

    def to(self, device: torch.device | str) -> CurriculumTargets:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = (
                tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device)
            )
        return CurriculumTargets(**moved)
