"""Training targets of the PIP head on one grid (official lib/data_utils.py, gen_target_pip), vectorized."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipnet_lit.pip.neighbors import Neighbors
from pipnet_lit.pip.types import PIPTargets


def _check_grid(grid: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"encode_targets: grid must be (H, W), got {grid!r}") from None
    if h < 1 or w < 1 or (h, w) != tuple(grid):
        raise ValueError(f"encode_targets: grid must be two positive ints (H, W), got {grid!r}")
    return h, w


def encode_targets(landmarks: Tensor, neighbors: Neighbors, grid: Sequence[int]) -> PIPTargets:
    """Score, offset and neighbour targets for a batch of landmark sets.

    Per landmark i at normalized (x, y): cell mu_x = clamp(floor(x * W), 0, W - 1), mu_y likewise with H;
    score[i] is one-hot at (mu_y, mu_x); offset_x[i] = x * W - mu_x there (not clamped: points outside the
    crop give offsets outside [0, 1], as official); neighbour channel i * num_nb + j holds x_k * W - mu_x with
    k = neighbors.indices[i, j] (same for y). All other entries are 0. Computed in float64 and stored in
    float32 like the official code.

    Args:
        landmarks: (B, L, 2) normalized to [0, 1] of the crop.
        neighbors: mean-face neighbours of the L landmarks.
        grid: (H, W) of the head's score maps.

    Returns:
        PIPTargets with score/offset_x/offset_y (B, L, H, W), nb_x/nb_y (B, L*num_nb, H, W), cell (B, L)
        = mu_y * W + mu_x, on the landmarks' device.
    """
    h, w = _check_grid(grid)
    if not isinstance(landmarks, Tensor):
        raise ValueError(
            f"encode_targets: landmarks must be a tensor (B, L, 2), got {type(landmarks).__name__}"
        )
    if landmarks.ndim != 3 or landmarks.shape[2] != 2:
        raise ValueError(f"encode_targets: landmarks must have shape (B, L, 2), got {tuple(landmarks.shape)}")
    b, num_lms, _ = landmarks.shape
    if num_lms != neighbors.num_landmarks:
        raise ValueError(
            f"encode_targets: landmarks have L={num_lms} points but the neighbour table is for "
            f"{neighbors.num_landmarks}; build the neighbours from this dataset's mean face"
        )
    lms = landmarks.detach().to(torch.float64)
    if not torch.isfinite(lms).all():
        bad = torch.nonzero(~torch.isfinite(lms).all(dim=2)).tolist()
        raise ValueError(f"encode_targets: NaN/inf landmark coordinates at (sample, landmark) {bad[:10]}")

    device = landmarks.device
    num_nb = neighbors.num_nb
    scale = torch.tensor([w, h], dtype=torch.float64, device=device)
    scaled = lms * scale  # (B, L, 2) in grid units
    lo = torch.zeros(2, dtype=torch.float64, device=device)
    hi = torch.tensor([w - 1, h - 1], dtype=torch.float64, device=device)
    mu = torch.minimum(torch.maximum(torch.floor(scaled), lo), hi)  # (B, L, 2) cell (mu_x, mu_y)
    cell = (mu[..., 1] * w + mu[..., 0]).to(torch.long)  # (B, L)

    offsets = (scaled - mu).to(torch.float32)  # (B, L, 2)
    nb_idx = neighbors.indices.to(device)
    nb_pts = scaled[:, nb_idx]  # (B, L, num_nb, 2): neighbour k = indices[i, j] of landmark i
    nb_offsets = (nb_pts - mu[:, :, None, :]).to(torch.float32)

    hw = h * w
    index = cell[..., None]  # (B, L, 1)
    score = torch.zeros(b, num_lms, hw, dtype=torch.float32, device=device)
    score.scatter_(2, index, 1.0)
    off_x = torch.zeros_like(score).scatter_(2, index, offsets[..., 0:1])
    off_y = torch.zeros_like(score).scatter_(2, index, offsets[..., 1:2])

    nb_index = index.repeat_interleave(num_nb, dim=1)  # (B, L*num_nb, 1), channel i*num_nb + j
    nb_shape = (b, num_lms * num_nb, hw)
    nb_x = torch.zeros(nb_shape, dtype=torch.float32, device=device)
    nb_x.scatter_(2, nb_index, nb_offsets[..., 0].reshape(b, num_lms * num_nb, 1))
    nb_y = torch.zeros(nb_shape, dtype=torch.float32, device=device)
    nb_y.scatter_(2, nb_index, nb_offsets[..., 1].reshape(b, num_lms * num_nb, 1))

    return PIPTargets(
        score=score.view(b, num_lms, h, w),
        offset_x=off_x.view(b, num_lms, h, w),
        offset_y=off_y.view(b, num_lms, h, w),
        nb_x=nb_x.view(b, num_lms * num_nb, h, w),
        nb_y=nb_y.view(b, num_lms * num_nb, h, w),
        cell=cell,
    )
