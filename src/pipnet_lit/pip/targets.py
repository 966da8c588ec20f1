"""Training targets of the PIP head, vectorized: one grid (official lib/data_utils.py, gen_target_pip) and the
curriculum self-training targets on the full grid and two coarser ones (official GSSL data utils)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipnet_lit.pip.neighbors import Neighbors
from pipnet_lit.pip.types import CurriculumTargets, PIPTargets

# Curriculum task types, in the order of the score maps they supervise: std -> the full grid (with offsets and
# neighbours), cls2 -> the 2x-coarser map only, cls3 -> the 4x-coarser map only. A task id indexes this tuple.
TASKS: tuple[str, str, str] = ("std", "cls2", "cls3")
# Pooling factor of each coarse score map (PIPOutputs.score_coarse / CurriculumTargets.score_coarse order).
COARSE_FACTORS: tuple[int, int] = (2, 4)


def _check_grid(grid: Sequence[int], fn: str = "encode_targets") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: grid must be (H, W), got {grid!r}") from None
    if h < 1 or w < 1 or (h, w) != tuple(grid):
        raise ValueError(f"{fn}: grid must be two positive ints (H, W), got {grid!r}")
    return h, w


def _check_landmarks(landmarks: Tensor, neighbors: Neighbors, fn: str) -> Tensor:
    """Validate (B, L, 2) landmarks against the neighbour table; return them detached in float64."""
    if not isinstance(landmarks, Tensor):
        raise ValueError(f"{fn}: landmarks must be a tensor (B, L, 2), got {type(landmarks).__name__}")
    if landmarks.ndim != 3 or landmarks.shape[2] != 2:
        raise ValueError(f"{fn}: landmarks must have shape (B, L, 2), got {tuple(landmarks.shape)}")
    num_lms = landmarks.shape[1]
    if num_lms != neighbors.num_landmarks:
        raise ValueError(
            f"{fn}: landmarks have L={num_lms} points but the neighbour table is for "
            f"{neighbors.num_landmarks}; build the neighbours from this dataset's mean face"
        )
    lms = landmarks.detach().to(torch.float64)
    if not torch.isfinite(lms).all():
        bad = torch.nonzero(~torch.isfinite(lms).all(dim=2)).tolist()
        raise ValueError(f"{fn}: NaN/inf landmark coordinates at (sample, landmark) {bad[:10]}")
    return lms


def _cells(lms: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Grid-unit coordinates, clamped cells and flat cell indices of float64 landmarks (B, L, 2) on (h, w).

    Returns scaled (B, L, 2) = (x * w, y * h), mu (B, L, 2) = clamp(floor(scaled), 0, (w - 1, h - 1)) as
    float64, and cell (B, L) long = mu_y * w + mu_x.
    """
    scale = torch.tensor([w, h], dtype=torch.float64, device=lms.device)
    scaled = lms * scale
    lo = torch.zeros(2, dtype=torch.float64, device=lms.device)
    hi = torch.tensor([w - 1, h - 1], dtype=torch.float64, device=lms.device)
    mu = torch.minimum(torch.maximum(torch.floor(scaled), lo), hi)
    cell = (mu[..., 1] * w + mu[..., 0]).to(torch.long)
    return scaled, mu, cell


def _one_hot_maps(cell: Tensor, h: int, w: int) -> Tensor:
    """(B, L) flat cells -> (B, L, h, w) float32 maps, 1 at each cell and 0 elsewhere."""
    b, num_lms = cell.shape
    score = torch.zeros(b, num_lms, h * w, dtype=torch.float32, device=cell.device)
    score.scatter_(2, cell[..., None], 1.0)
    return score.view(b, num_lms, h, w)


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
    lms = _check_landmarks(landmarks, neighbors, "encode_targets")
    b, num_lms, _ = landmarks.shape
    device = landmarks.device
    num_nb = neighbors.num_nb
    # scaled (B, L, 2) in grid units, mu (B, L, 2) the cell (mu_x, mu_y), cell (B, L) flat
    scaled, mu, cell = _cells(lms, h, w)

    offsets = (scaled - mu).to(torch.float32)  # (B, L, 2)
    nb_idx = neighbors.indices.to(device)
    nb_pts = scaled[:, nb_idx]  # (B, L, num_nb, 2): neighbour k = indices[i, j] of landmark i
    nb_offsets = (nb_pts - mu[:, :, None, :]).to(torch.float32)

    hw = h * w
    index = cell[..., None]  # (B, L, 1)
    score = _one_hot_maps(cell, h, w).view(b, num_lms, hw)
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


def task_ids(tasks: Sequence[str] | Tensor, batch_size: int | None = None) -> Tensor:
    """Per-sample curriculum task ids (B,) long, indices into `TASKS` ("std" 0, "cls2" 1, "cls3" 2).

    Args:
        tasks: a sequence of task names, one per sample, or an integer tensor (B,) of ids (kept on its
            device).
        batch_size: when given, the number of tasks must equal it.
    """
    if isinstance(tasks, Tensor):
        if tasks.dtype.is_floating_point or tasks.dtype.is_complex or tasks.dtype == torch.bool:
            raise ValueError(f"task ids must be an integer tensor, got dtype {tasks.dtype}")
        if tasks.ndim != 1:
            raise ValueError(f"task ids must have shape (B,), got {tuple(tasks.shape)}")
        ids = tasks.to(torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= len(TASKS)):
            raise ValueError(
                f"task ids must lie in [0, {len(TASKS) - 1}] (indices into TASKS = {TASKS}), "
                f"got values {sorted(set(ids.tolist()))}"
            )
    elif isinstance(tasks, str):
        raise ValueError(
            f"tasks must give one task per sample (a sequence of names), got the string {tasks!r}"
        )
    else:
        names = list(tasks)
        unknown = sorted({repr(t) for t in names if not isinstance(t, str) or t not in TASKS})
        if unknown:
            raise ValueError(
                f"unknown curriculum task(s) {', '.join(unknown)}; valid names: {', '.join(TASKS)} "
                "(or pass an integer tensor of task ids)"
            )
        ids = torch.tensor([TASKS.index(t) for t in names], dtype=torch.long)
    if batch_size is not None and ids.shape[0] != batch_size:
        raise ValueError(f"got {ids.shape[0]} task(s) for a batch of {batch_size} samples")
    return ids


def encode_curriculum_targets(
    landmarks: Tensor, tasks: Sequence[str] | Tensor, neighbors: Neighbors, grid: Sequence[int]
) -> CurriculumTargets:
    """Targets and per-sample map masks of the curriculum self-training loss (`curriculum_loss`).

    Full grid: exactly `encode_targets(landmarks, neighbors, grid)`, for every sample. Coarse grids (H/2, W/2)
    and (H/4, W/4): one-hot score maps at cell clamp(floor(x * W/f), 0, W/f - 1) (same for y with H), f = 2
    and 4, for every sample. Which maps a sample supervises follows its task: "std" (labeled data and late
    pseudo-labels) the full map plus offsets and neighbours; "cls2" only the 2x-coarser map; "cls3" only the
    4x-coarser map. The loss applies the masks; the unsupervised maps' values are never read.

    Args:
        landmarks: (B, L, 2) normalized to [0, 1] of the crop (pseudo-labels may fall outside).
        tasks: one of `TASKS` per sample, or a (B,) integer tensor of task ids (see `task_ids`).
        neighbors: mean-face neighbours of the L landmarks.
        grid: (H, W) of the full score maps; both divisible by 4.

    Returns:
        CurriculumTargets on the landmarks' device.
    """
    h, w = _check_grid(grid, "encode_curriculum_targets")
    lms = _check_landmarks(landmarks, neighbors, "encode_curriculum_targets")
    last = COARSE_FACTORS[-1]
    if h % last or w % last:
        raise ValueError(
            f"encode_curriculum_targets: grid {(h, w)} must be divisible by {last} (the coarsest score map "
            f"is the full grid max-pooled {len(COARSE_FACTORS)} times by 2)"
        )
    device = landmarks.device
    task = task_ids(tasks, batch_size=landmarks.shape[0]).to(device)
    full = encode_targets(landmarks, neighbors, (h, w))
    coarse = []
    for f in COARSE_FACTORS:
        _, _, cell = _cells(lms, h // f, w // f)
        coarse.append(_one_hot_maps(cell, h // f, w // f))
    map_mask = torch.nn.functional.one_hot(task, len(TASKS)).to(torch.bool)
    return CurriculumTargets(
        score=full.score,
        offset_x=full.offset_x,
        offset_y=full.offset_y,
        nb_x=full.nb_x,
        nb_y=full.nb_y,
        cell=full.cell,
        score_coarse=tuple(coarse),
        task=task,
        map_mask=map_mask,
    )
