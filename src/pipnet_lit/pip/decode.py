"""Landmarks from PIP head outputs, batched (official lib/functions.py forward_pip + lib/test.py merge)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor

from pipnet_lit.pip.neighbors import Neighbors
from pipnet_lit.pip.types import PIPOutputs


@dataclass
class DecodeResult:
    """Everything the decoder computes; coordinates normalized to [0, 1] of the crop.

    own: (B, L, 2) each landmark's own estimate (cell + offset).
    nb: (B, L, num_nb, 2) landmark i's estimate of its neighbour indices[i, j] (the vote of slot j).
    received: (B, L, max_len, 2) the votes landmark t receives, picked by (reverse_index1, reverse_index2),
        padding repeats included (a landmark without votes repeats its own estimate).
    merged: (B, L, 2) mean of `own` and `received` (1 + max_len values) per landmark.
    max_score: (B, L) the winning score of each landmark (raw head output), e.g. for confidences.
    cell: (B, L) long, flat index y * W + x of the winning cell.
    """

    own: Tensor
    nb: Tensor
    received: Tensor
    merged: Tensor
    max_score: Tensor
    cell: Tensor


def _check_shapes(
    score: Tensor, offset_x: Tensor, offset_y: Tensor, nb_x: Tensor, nb_y: Tensor, nbrs: Neighbors
):
    if score.ndim != 4:
        raise ValueError(f"decode: score must have shape (B, L, H, W), got {tuple(score.shape)}")
    b, num_lms, h, w = score.shape
    for name, t in (("offset_x", offset_x), ("offset_y", offset_y)):
        if t.shape != score.shape:
            raise ValueError(
                f"decode: {name} has shape {tuple(t.shape)}, expected {tuple(score.shape)} like score"
            )
    if num_lms != nbrs.num_landmarks:
        raise ValueError(
            f"decode: outputs have L={num_lms} landmarks but the neighbour table is for {nbrs.num_landmarks}"
        )
    expected_nb = (b, num_lms * nbrs.num_nb, h, w)
    for name, t in (("nb_x", nb_x), ("nb_y", nb_y)):
        if tuple(t.shape) != expected_nb:
            raise ValueError(
                f"decode: {name} has shape {tuple(t.shape)}, expected {expected_nb} (L * num_nb = "
                f"{num_lms} * {nbrs.num_nb} channels)"
            )


def _as_record(fn: str, first: Any, args: tuple[Any, ...]) -> tuple[PIPOutputs, Neighbors, tuple[Any, ...]]:
    """Accept `(outputs, neighbors, *rest)` or the thin form `(score, ox, oy, nb_x, nb_y, neighbors, *rest)`.

    `outputs` is a `PIPOutputs` or any 5- or 6-element tuple in its order (a traced network returns plain
    tuples). Returns the record, the neighbour tables and the remaining positional arguments.
    """
    if isinstance(first, Tensor):
        if len(args) < 5 or not all(isinstance(t, Tensor) for t in args[:4]):
            raise TypeError(
                f"{fn}: pass the PIPOutputs record, {fn}(outputs, neighbors), or five tensors, "
                f"{fn}(score, offset_x, offset_y, nb_x, nb_y, neighbors)"
            )
        outputs, args = PIPOutputs(first, *args[:4]), args[4:]
    elif isinstance(first, tuple) and len(first) in (5, 6):
        outputs = first if isinstance(first, PIPOutputs) else PIPOutputs(*first)
        if not args:
            raise TypeError(f"{fn}: missing the neighbour tables: {fn}(outputs, neighbors)")
    else:
        raise TypeError(
            f"{fn}: expected a PIPOutputs record (or the score tensor of the five-tensor form), got "
            f"{type(first).__name__}"
        )
    neighbors, rest = args[0], args[1:]
    if not isinstance(neighbors, Neighbors):
        unpacked = isinstance(neighbors, tuple) and not neighbors  # decode(*record, nbrs): score_coarse = ()
        hint = " (a PIPOutputs record unpacks to six values: pass the record itself)" if unpacked else ""
        raise TypeError(f"{fn}: expected Neighbors after the outputs, got {type(neighbors).__name__}{hint}")
    return outputs, neighbors, rest


@overload
def decode_details(outputs: PIPOutputs, neighbors: Neighbors, /) -> DecodeResult: ...
@overload
def decode_details(
    score: Tensor, offset_x: Tensor, offset_y: Tensor, nb_x: Tensor, nb_y: Tensor, neighbors: Neighbors, /
) -> DecodeResult: ...
def decode_details(outputs: PIPOutputs | Tensor, /, *args: Any) -> DecodeResult:
    """Own estimates, neighbour votes and merged landmarks from raw head outputs.

    cell = argmax of each flattened score map (first maximum on ties, like torch.argmax);
    x = (cell % W + offset_x[cell]) / W, y = (cell // W + offset_y[cell]) / H. Landmark i's vote for its
    neighbour slot j is (cell_i % W + nb_x[i * num_nb + j][cell_i]) / W (same for y). Computed in float32 (or
    the outputs' dtype when wider). Only the full grid is decoded: `score_coarse` is ignored (the official
    GSSL inference reads the full-grid map alone).

    Call as `decode_details(outputs, neighbors)` with a `PIPOutputs` (or a 5/6-tuple in its order, e.g. a
    traced network's output), or in the thin form `decode_details(score, offset_x, offset_y, nb_x, nb_y,
    neighbors)`.

    Args:
        outputs: score, offset_x, offset_y (B, L, H, W) raw head outputs; nb_x, nb_y (B, L * num_nb, H, W),
            channel i * num_nb + j for neighbour j of landmark i.
        neighbors: the tables built from the mean face (moved to the outputs' device as needed).
    """
    record, neighbors, rest = _as_record("decode_details", outputs, args)
    if rest:
        raise TypeError(f"decode_details: unexpected extra arguments {rest!r}")
    return _decode_details(record, neighbors)


def _decode_details(outputs: PIPOutputs, neighbors: Neighbors) -> DecodeResult:
    score, offset_x, offset_y, nb_x, nb_y = outputs[:5]
    _check_shapes(score, offset_x, offset_y, nb_x, nb_y, neighbors)
    b, num_lms, h, w = score.shape
    num_nb, max_len = neighbors.num_nb, neighbors.max_len
    dtype = torch.promote_types(score.dtype, torch.float32)
    device = score.device

    flat_score = score.reshape(b, num_lms, h * w)
    cell = flat_score.argmax(dim=2)  # (B, L)
    index = cell[..., None]
    max_score = flat_score.gather(2, index).squeeze(2)

    col = (cell % w).to(dtype)
    row = torch.div(cell, w, rounding_mode="floor").to(dtype)
    ox = offset_x.reshape(b, num_lms, h * w).gather(2, index).squeeze(2).to(dtype)
    oy = offset_y.reshape(b, num_lms, h * w).gather(2, index).squeeze(2).to(dtype)
    own = torch.stack(((col + ox) / w, (row + oy) / h), dim=2)  # (B, L, 2)

    nb_index = index[:, :, None, :].expand(b, num_lms, num_nb, 1)
    nbx = nb_x.reshape(b, num_lms, num_nb, h * w).gather(3, nb_index).squeeze(3).to(dtype)
    nby = nb_y.reshape(b, num_lms, num_nb, h * w).gather(3, nb_index).squeeze(3).to(dtype)
    nb = torch.stack(((col[..., None] + nbx) / w, (row[..., None] + nby) / h), dim=3)  # (B, L, num_nb, 2)

    rev1 = neighbors.reverse_index1.to(device)
    rev2 = neighbors.reverse_index2.to(device)
    has_vote = (rev1 >= 0).view(1, num_lms, max_len, 1)
    received = nb[:, rev1.clamp(min=0), rev2.clamp(min=0)].view(b, num_lms, max_len, 2)
    received = torch.where(has_vote, received, own[:, :, None, :])
    # Per coordinate, mean over the contiguous last dim exactly like the official (L, 1 + max_len) rows.
    merged = torch.stack(
        [torch.cat((own[..., c : c + 1], received[..., c]), dim=2).mean(dim=2) for c in range(2)], dim=2
    )

    return DecodeResult(own=own, nb=nb, received=received, merged=merged, max_score=max_score, cell=cell)


@overload
def decode(outputs: PIPOutputs, neighbors: Neighbors, /, merge: bool = True) -> Tensor: ...
@overload
def decode(
    score: Tensor,
    offset_x: Tensor,
    offset_y: Tensor,
    nb_x: Tensor,
    nb_y: Tensor,
    neighbors: Neighbors,
    /,
    merge: bool = True,
) -> Tensor: ...
def decode(outputs: PIPOutputs | Tensor, /, *args: Any, merge: bool | None = None) -> Tensor:
    """Landmarks (B, L, 2) in [0, 1] crop coordinates: merged with neighbour votes (default) or own estimates.

    `decode(outputs, neighbors, merge=True)` with the `PIPOutputs` record; the thin form
    `decode(score, offset_x, offset_y, nb_x, nb_y, neighbors, merge=True)` stays for existing callers. See
    `decode_details` for the arithmetic.
    """
    record, neighbors, rest = _as_record("decode", outputs, args)
    if len(rest) > 1 or (rest and merge is not None):
        raise TypeError(f"decode: unexpected extra arguments {rest!r}")
    if rest:
        merge = rest[0]
    details = _decode_details(record, neighbors)
    return details.merged if merge is None or merge else details.own
