"""Landmark metrics as pure functions: per-sample NME and FR/AUC of the cumulative error curve.

Agrees with the official lib/functions.py (compute_nme, compute_fr_and_auc) and lib/test.py normalizations.
Computed in float64 (float32 on MPS, which has no float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

NORMS = ("inter_ocular", "inter_pupil", "bbox", "diag", "none")

# Which landmarks define inter_ocular / inter_pupil is a fact of the landmark scheme (its YAML's `norms:`),
# passed in as `norm_indices`; there is no table keyed by landmark count here.
BOX_SIZES = ("box_diag", "box_sqrt_area", "box_long_side")

NormSpec = str | float | int | Tensor
IndexSpec = Sequence[int | Sequence[int]]


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _index_groups(norm: str, norm_indices: IndexSpec | None, num_lms: int) -> tuple[list[int], list[int]]:
    if norm_indices is None:
        raise ValueError(
            f"nme: {norm} needs norm_indices, the two landmark index groups of the scheme (the landmark "
            f"scheme YAML's 'norms:' entry, e.g. ibug68 inter_ocular [[36], [45]]); got none for {num_lms} "
            "landmarks"
        )
    spec = norm_indices
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) != 2:
        raise ValueError(f"nme: norm_indices must be two indices or two lists of indices, got {spec!r}")
    groups = []
    for side in spec:
        group = [side] if isinstance(side, (int, np.integer)) else list(side)
        if not group or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in group):
            raise ValueError(
                f"nme: norm_indices entries must be ints or non-empty lists of ints, got {spec!r}"
            )
        bad = [int(i) for i in group if not 0 <= int(i) < num_lms]
        if bad:
            raise ValueError(f"nme: norm_indices {bad} out of range for {num_lms} landmarks (0-based)")
        groups.append([int(i) for i in group])
    return groups[0], groups[1]


def normalization(
    target: Tensor, norm: NormSpec = "inter_ocular", *, norm_indices: IndexSpec | None = None
) -> Tensor:
    """Per-sample normalizing distance (B,) from the ground truth `target` (B, L, 2); see `nme` for `norm`."""
    b, num_lms, _ = target.shape
    dtype = _work_dtype(target.device)
    gt = target.to(dtype)
    if isinstance(norm, Tensor):
        values = norm.to(device=target.device, dtype=dtype)
        if values.ndim == 0:
            values = values.expand(b)
        if tuple(values.shape) != (b,):
            raise ValueError(
                f"nme: per-sample norm must have shape ({b},) or be a scalar, got {tuple(norm.shape)}"
            )
        return values
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        return torch.full((b,), float(norm), dtype=dtype, device=target.device)
    if norm == "none":
        return torch.ones(b, dtype=dtype, device=target.device)
    if norm in ("inter_ocular", "inter_pupil"):
        left, right = _index_groups(norm, norm_indices, num_lms)
        a = gt[:, left].mean(dim=1)
        c = gt[:, right].mean(dim=1)
        return (a - c).square().sum(dim=1).sqrt()
    if norm in ("bbox", "diag"):
        size = gt.amax(dim=1) - gt.amin(dim=1)  # (B, 2) width, height of the landmarks' box
        if norm == "bbox":
            return (size[:, 0] * size[:, 1]).sqrt()
        return size.square().sum(dim=1).sqrt()
    raise ValueError(
        f"nme: unknown norm {norm!r}; valid: {', '.join(NORMS)}, a positive number, or a (B,) tensor"
    )


def nme(
    pred: Tensor, target: Tensor, norm: NormSpec = "inter_ocular", *, norm_indices: IndexSpec | None = None
) -> Tensor:
    """Per-sample normalized mean error: mean over landmarks of ||pred - target|| / norm.

    Args:
        pred, target: (B, L, 2) landmarks in the same coordinates (pixels or normalized crop coordinates).
        norm: "inter_ocular" / "inter_pupil" (distance between the means of the two `norm_indices` groups,
            which the landmark scheme defines: 300W outer eye corners 36/45, eye centres 36..41 / 42..47),
            "bbox" (sqrt(w * h) of the
            ground-truth landmarks' box), "diag" (its diagonal), "none" or 1 (no normalization, e.g. AFLW on
            normalized crop coordinates), a positive number, or a (B,) tensor of per-sample values.
        norm_indices: for inter_ocular / inter_pupil: (a, b) or two lists of indices whose means are used.

    Returns:
        (B,) float64 NMEs (float32 on MPS).
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError("nme: pred and target must be tensors of shape (B, L, 2)")
    if pred.ndim != 3 or pred.shape[2] != 2 or pred.shape != target.shape:
        raise ValueError(
            f"nme: pred and target must both have shape (B, L, 2), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.shape[1] == 0:
        raise ValueError("nme: landmark sets are empty (L = 0)")
    dtype = _work_dtype(target.device)
    target = target.detach()
    norm_values = normalization(target, norm, norm_indices=norm_indices)
    bad = ~(torch.isfinite(norm_values) & (norm_values > 0))
    if bad.any():
        idx = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"nme: normalizing distance ({norm if isinstance(norm, str) else 'given'}) is zero, negative or "
            f"non-finite for samples {idx[:10]}; check those ground-truth landmarks or the norm indices"
        )
    err = (pred.detach().to(device=target.device, dtype=dtype) - target.to(dtype)).square().sum(dim=2).sqrt()
    return err.mean(dim=1) / norm_values


def _as_1d_float64(nmes: Tensor | np.ndarray | Sequence[float]) -> Tensor:
    if isinstance(nmes, Tensor):
        t = nmes.detach().cpu().to(torch.float64)
    else:
        t = torch.as_tensor(np.asarray(nmes, dtype=np.float64))
    return t.reshape(-1)


def _simpson_segment(y: Tensor, x: Tensor, start: int, stop: int) -> Tensor:
    """Composite Simpson on panels starting at start, start + 2, ... < stop (old scipy _basic_simps)."""
    if stop <= start:  # fewer than three points: no Simpson panel
        return torch.zeros((), dtype=torch.float64)
    i0 = torch.arange(start, stop, 2)
    h = x[1:] - x[:-1]
    h0, h1 = h[i0], h[i0 + 1]
    hsum = h0 + h1
    hprod = h0 * h1
    h0divh1 = h0 / h1
    terms = (
        hsum
        / 6.0
        * (y[i0] * (2 - 1.0 / h0divh1) + y[i0 + 1] * hsum * hsum / hprod + y[i0 + 2] * (2 - h0divh1))
    )
    return terms.sum()


def simpson(y: Tensor, x: Tensor) -> Tensor:
    """Simpson integral of samples y over x (1-D float64), like scipy's old `simps(y, x)` with even='avg'.

    Odd N: composite Simpson (equal to scipy.integrate.simpson). Even N: the mean of (Simpson on the first N-1
    points + trapezoid on the last interval) and (trapezoid on the first interval + Simpson on the last N-1).
    """
    n = y.shape[0]
    if n % 2 == 1:
        return _simpson_segment(y, x, 0, n - 2)
    first = 0.5 * (x[-1] - x[-2]) * (y[-1] + y[-2])
    last = 0.5 * (x[1] - x[0]) * (y[1] + y[0])
    val = (first + last) / 2.0
    result = (_simpson_segment(y, x, 0, n - 3) + _simpson_segment(y, x, 1, n - 2)) / 2.0
    return result + val


def ced_curve(nmes: Tensor | np.ndarray | Sequence[float], threshold: float = 0.1, step: float = 1e-4):
    """Cumulative error distribution: xs = np.arange(0, threshold + step, step), ys = fraction of NME <= x.

    Returns (xs, ys), float64 CPU tensors. NaN NMEs count as failures (never <= x), as in the official code.
    """
    if not (threshold > 0 and step > 0 and math.isfinite(threshold) and math.isfinite(step)):
        raise ValueError(
            f"fr_auc: threshold and step must be positive, got threshold={threshold}, step={step}"
        )
    values = _as_1d_float64(nmes)
    if values.numel() == 0:
        raise ValueError("fr_auc: no NMEs given (empty evaluation set?)")
    xs = torch.from_numpy(np.arange(0, threshold + step, step, dtype=np.float64))
    finite = torch.sort(values[~torch.isnan(values)]).values
    counts = torch.searchsorted(finite, xs, right=True)  # number of NMEs <= x
    ys = counts.to(torch.float64) / float(values.numel())
    return xs, ys


def fr_auc(
    nmes: Tensor | np.ndarray | Sequence[float], threshold: float = 0.1, step: float = 1e-4
) -> tuple[float, float]:
    """Failure rate and AUC at `threshold`, matching the official compute_fr_and_auc.

    xs = np.arange(0, threshold + step, step) (note: the last x may exceed threshold, e.g. 0.0501 for 0.05),
    ys = fraction of NMEs <= x, fr = 1 - ys[-1], auc = Simpson integral of ys over xs / threshold (old scipy
    `simps`, even='avg').

    Args:
        nmes: per-sample NMEs (any shape, flattened).

    Returns:
        (fr, auc) as python floats.
    """
    xs, ys = ced_curve(nmes, threshold, step)
    fr = 1.0 - float(ys[-1])
    auc = float(simpson(ys, xs)) / threshold
    return fr, auc


def box_size(boxes_xywh: Tensor, kind: str) -> Tensor:
    """Per-sample size (B,) of boxes (B, 4) ``[x0, y0, w, h]`` in pixels, for box-normalized NMEs.

    ``box_diag`` = sqrt(w^2 + h^2), ``box_sqrt_area`` = sqrt(w * h), ``box_long_side`` = max(w, h) (MMPose).
    """
    wh = boxes_xywh[..., 2:4].to(_work_dtype(boxes_xywh.device))
    if kind == "box_diag":
        return wh.square().sum(dim=-1).sqrt()
    if kind == "box_sqrt_area":
        return (wh[..., 0] * wh[..., 1]).sqrt()
    if kind == "box_long_side":
        return wh.amax(dim=-1)
    raise ValueError(f"box_size: unknown box norm {kind!r}; valid: {', '.join(BOX_SIZES)}")
