"""Mean-face neighbours of every landmark and the reverse map used to merge neighbour votes.

Agrees with the official `get_meanface` (lib/functions.py of jhb86253817/PIPNet): for landmark i, the squared
Euclidean distance to every mean-face point, sorted with `np.argsort` (default kind, so ties resolve the same
way), positions 1..num_nb. Landmark t's reverse list holds every (i, j) with indices[i][j] == t, in increasing
i then j, padded to `max_len` by repeating the list.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)  # tensor fields: compare tables explicitly
class Neighbors:
    """Neighbour tables for L landmarks.

    indices: (L, num_nb) long; indices[i, j] is the j-th nearest mean-face neighbour of landmark i (neighbour
        channel i * num_nb + j of the head).
    reverse_index1, reverse_index2: (L * max_len,) long; entries t * max_len .. (t + 1) * max_len - 1 are the
        (i, j) pairs whose neighbour is t, padded by repetition. A landmark that is nobody's neighbour (the
        official code crashes there) gets -1 entries; `decode` then uses its own estimate alone.
    max_len: length of the longest reverse list.
    """

    indices: Tensor
    reverse_index1: Tensor
    reverse_index2: Tensor
    max_len: int

    @property
    def num_landmarks(self) -> int:
        return int(self.indices.shape[0])

    @property
    def num_nb(self) -> int:
        return int(self.indices.shape[1])

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def to(self, device: torch.device | str) -> Neighbors:
        """The same tables on `device`."""
        return Neighbors(
            indices=self.indices.to(device),
            reverse_index1=self.reverse_index1.to(device),
            reverse_index2=self.reverse_index2.to(device),
            max_len=self.max_len,
        )


def _as_meanface_array(meanface: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(meanface, Tensor):
        arr = meanface.detach().cpu().to(torch.float64).numpy()
    else:
        arr = np.asarray(meanface, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"build_neighbors: meanface must have shape (L, 2) (normalized x, y), got {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise ValueError(f"build_neighbors: need at least 2 mean-face landmarks, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        bad = np.unique(np.nonzero(~np.isfinite(arr))[0]).tolist()
        raise ValueError(f"build_neighbors: meanface has NaN/inf coordinates at landmarks {bad}")
    return arr


def build_neighbors(meanface: Tensor | np.ndarray, num_nb: int) -> Neighbors:
    """Nearest mean-face neighbours and reverse merge indices, identical to the official `get_meanface`.

    Args:
        meanface: (L, 2) mean face, normalized to [0, 1] (tensor or array; used in float64 like the official
            file parser).
        num_nb: neighbours per landmark, 1 <= num_nb < L.
    """
    mf = _as_meanface_array(meanface)
    num_lms = mf.shape[0]
    if isinstance(num_nb, bool) or not isinstance(num_nb, (int, np.integer)):
        raise ValueError(f"build_neighbors: num_nb must be an int, got {num_nb!r}")
    num_nb = int(num_nb)
    if not 1 <= num_nb < num_lms:
        raise ValueError(
            f"build_neighbors: num_nb={num_nb} must be in [1, L-1] = [1, {num_lms - 1}] for a mean face with "
            f"{num_lms} landmarks (each landmark's neighbours exclude itself)"
        )

    # Squared distances exactly as official (elementwise power, sum of the two coordinates), then the same
    # argsort per row. Position 0 is normally the landmark itself; with duplicated mean-face points it may not
    # be, and (as official) we still take positions 1..num_nb.
    dists = np.sum(np.power(mf[:, None, :] - mf[None, :, :], 2), axis=2)
    order = np.argsort(dists, axis=1)
    indices = order[:, 1 : 1 + num_nb].astype(np.int64)  # (L, num_nb)

    # Reverse lists: stable sort of the flattened (i, j) table by target keeps increasing i, then j.
    flat = indices.reshape(-1)
    by_target = np.argsort(flat, kind="stable")
    src_i, src_j = np.divmod(by_target, num_nb)
    counts = np.bincount(flat, minlength=num_lms)
    max_len = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    # Pad each list by cyclic repetition (official: list + list * 10, cut to max_len; identical whenever the
    # official code works, i.e. 11 * len >= max_len).
    slot = np.arange(max_len)
    safe_counts = np.maximum(counts, 1)
    pos = starts[:, None] + slot[None, :] % safe_counts[:, None]  # (L, max_len)
    pos = np.minimum(pos, flat.size - 1)
    rev1 = src_i[pos]
    rev2 = src_j[pos]
    empty = counts == 0
    if empty.any():
        rev1[empty] = -1
        rev2[empty] = -1
        warnings.warn(
            f"build_neighbors: landmarks {np.nonzero(empty)[0].tolist()} are not among the {num_nb} nearest "
            "neighbours of any other landmark; the merged decode uses their own estimate only (the official "
            "code fails here). A larger num_nb avoids this.",
            stacklevel=2,
        )

    return Neighbors(
        indices=torch.from_numpy(indices),
        reverse_index1=torch.from_numpy(rev1.reshape(-1).astype(np.int64)),
        reverse_index2=torch.from_numpy(rev2.reshape(-1).astype(np.int64)),
        max_len=max_len,
    )
