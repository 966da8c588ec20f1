"""Pseudo-label diagnostics: a round's pseudo-labels scored against the pool's true landmarks, if it has them.

In curriculum self-training, every round >= 1 pseudo-labels the unlabeled pool with the previous round's
model. When that pool does carry true landmarks (synthetic data, any labeled format), this module measures,
before the round trains, how good the pseudo-labels are: NME / FR with the dataset's primary normalization,
how often a pseudo-label falls in the true landmark's cell on the grids the curriculum supervises (full, 2x
and 4x coarser), whether the confidence score ranks faces by error, and what each confidence filter keeps.
The truth is only measured against, never used for training or filtering.

Pure math and presentation: numpy, torch (`pipnet_lit.metrics.functional`'s NME), matplotlib's Agg canvas.
Every result is a plain JSON-serializable dict (python floats, ints, strings, lists, None).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipnet_lit.files import atomic_write
from pipnet_lit.metrics.functional import IndexSpec, fr_auc, nme, normalization
from pipnet_lit.pip.targets import COARSE_FACTORS, TASKS, _cells
from pipnet_lit.presentation import correlation_cell, markdown_table, new_figure, percent_cell
from pipnet_lit.ssl.pseudo_labels import select_confident

#: Pooling factor of the grid each curriculum task supervises, in `TASKS` order (std, cls2, cls3).
TASK_FACTORS: tuple[int, ...] = (1, *COARSE_FACTORS)
#: The filters every diagnostics table shows, besides the configured one.
TOP_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
THRESHOLD_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)


def fr_key(fr_threshold: float) -> str:
    """The failure-rate key for a threshold, as the test metrics name it: ``fr@0.10``."""
    return f"fr@{fr_threshold:.2f}"


def _grid_key(g: int) -> str:
    return f"{g}x{g}"


def _as_float64(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"pseudo_label_diagnostics: {name} must be a float array, got {type(value).__name__}"
        ) from None


def _check_inputs(
    pred: Any, truth: Any, scores: Any, landmark_scores: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and convert: pred, truth (N, L, 2), scores (N,), landmark_scores (N, L) or None; float64."""
    pred = _as_float64("pred", pred)
    truth = _as_float64("truth", truth)
    scores = _as_float64("scores", scores)
    if pred.ndim != 3 or pred.shape[2] != 2 or pred.shape != truth.shape:
        raise ValueError(
            "pseudo_label_diagnostics: pred and truth must both have shape (N, L, 2), got pred "
            f"{pred.shape} and truth {truth.shape}"
        )
    n, num_lms, _ = pred.shape
    if n == 0 or num_lms == 0:
        raise ValueError(f"pseudo_label_diagnostics: no faces or no landmarks (pred shape {pred.shape})")
    if scores.shape != (n,):
        raise ValueError(
            f"pseudo_label_diagnostics: scores must have shape (N,) = ({n},) like pred {pred.shape}, "
            f"got {scores.shape}"
        )
    arrays = {"pred": pred, "truth": truth, "scores": scores}
    if landmark_scores is not None:
        landmark_scores = _as_float64("landmark_scores", landmark_scores)
        if landmark_scores.shape != (n, num_lms):
            raise ValueError(
                f"pseudo_label_diagnostics: landmark_scores must have shape (N, L) = ({n}, {num_lms}) like "
                f"pred {pred.shape}, got {landmark_scores.shape}"
            )
        arrays["landmark_scores"] = landmark_scores
    for name, values in arrays.items():
        finite = np.isfinite(values).reshape(n, -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)[:10].tolist()
            raise ValueError(f"pseudo_label_diagnostics: {name} has NaN/inf values at faces {bad}")
    return pred, truth, scores, landmark_scores


def _check_grid_and_task(grid: Any, task: str) -> tuple[int, int]:
    """Return (grid, factor of the task's grid), validated."""
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(
            f"pseudo_label_diagnostics: grid must be a positive int (the full grid G), got {grid!r}"
        )
    if task not in TASKS:
        raise ValueError(f"pseudo_label_diagnostics: unknown task {task!r}; valid: {', '.join(TASKS)}")
    factor = TASK_FACTORS[TASKS.index(task)]
    if grid % factor:
        raise ValueError(
            f"pseudo_label_diagnostics: task {task!r} supervises the grid G/{factor}, but grid {grid} is not "
            f"divisible by {factor}"
        )
    return int(grid), factor


def cell_hits(pred: np.ndarray, truth: np.ndarray, g: int) -> np.ndarray:
    """Per (face, landmark) whether pred lies in truth's cell on a g x g grid, as the targets place it.

    Cell = clamp(floor(x * g), 0, g - 1), independently for x and y (`pip.targets._cells`); both must match.

    Args:
        pred, truth: (N, L, 2) normalized crop coordinates (points outside [0, 1] clamp to the border cells).
        g: cells per side.

    Returns:
        (N, L) bool.
    """
    _, mu_pred, _ = _cells(torch.from_numpy(np.asarray(pred, dtype=np.float64)), g, g)
    _, mu_true, _ = _cells(torch.from_numpy(np.asarray(truth, dtype=np.float64)), g, g)
    return (mu_pred == mu_true).all(dim=2).numpy()


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks (N,) of x (N,), ties sharing the mean of their ranks (as scipy.stats.rankdata)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # last 1-based rank of each distinct value
    return ((ends - counts + 1 + ends) / 2.0)[inverse.reshape(-1)]


def spearman(x: Any, y: Any) -> float | None:
    """Spearman rank correlation of x, y (any shapes of N values, flattened): Pearson's r of average ranks.

    None when N < 3 or either input is constant (the correlation is undefined).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman: x and y must have the same number of values, got {x.size} and {y.size}")
    if x.size < 3:
        return None
    rx = _average_ranks(x)
    ry = _average_ranks(y)
    dx = rx - rx.mean()
    dy = ry - ry.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if denom == 0.0:
        return None
    return float((dx * dy).sum() / denom)


def _fr(nmes: np.ndarray, fr_threshold: float) -> float:
    """Failure rate of per-face NMEs as the test metric computes it (`metrics.functional.fr_auc`)."""
    return float(fr_auc(nmes, threshold=fr_threshold)[0])


def _filter_rule(threshold: float | None, top_fraction: float | None) -> str:
    parts = []
    if threshold is not None:
        parts.append(f"threshold={float(threshold)!r}")
    if top_fraction is not None:
        parts.append(f"top_fraction={float(top_fraction)!r}")
    return " & ".join(parts) if parts else "all"


def _selection_rows(
    scores: np.ndarray,
    nmes: np.ndarray,
    fr_threshold: float,
    threshold: float | None,
    top_fraction: float | None,
) -> list[dict[str, Any]]:
    """What each filter keeps: the standard top fractions and score-quantile thresholds, then the configured
    filter (``configured`` True; merged into a standard row with the same rule)."""
    n = len(scores)
    quantiles = np.quantile(scores, THRESHOLD_QUANTILES)
    filters = [(None, f) for f in TOP_FRACTIONS] + [(round(float(q), 4), None) for q in quantiles]
    configured_rule = _filter_rule(threshold, top_fraction)
    rows: dict[str, dict[str, Any]] = {}
    for thr, frac in [*filters, (threshold, top_fraction)]:
        rule = _filter_rule(thr, frac)
        if rule in rows:
            continue
        keep = select_confident(scores, threshold=thr, top_fraction=frac)
        kept = int(keep.sum())
        rows[rule] = {
            "rule": rule,
            "kept": kept,
            "kept_fraction": kept / n,
            "nme": float(nmes[keep].mean()) if kept else None,
            "fr": _fr(nmes[keep], fr_threshold) if kept else None,
            "configured": False,
        }
    rows[configured_rule]["configured"] = True
    return list(rows.values())


def _confidence_bins(
    scores: np.ndarray, nmes: np.ndarray, bins: int, fr_threshold: float
) -> list[dict[str, Any]]:
    """`bins` equal-count bins of faces by ascending score (np.array_split of the stable sort; at most N)."""
    order = np.argsort(scores, kind="stable")
    result = []
    for idx in np.array_split(order, min(bins, len(scores))):
        s, e = scores[idx], nmes[idx]
        result.append(
            {
                "score_lo": float(s.min()),
                "score_hi": float(s.max()),
                "mean_score": float(s.mean()),
                "count": int(len(idx)),
                "mean_nme": float(e.mean()),
                "fr": _fr(e, fr_threshold),
            }
        )
    return result


def pseudo_label_diagnostics(
    pred: Any,
    truth: Any,
    scores: Any,
    *,
    norm: str | float = "inter_ocular",
    norm_indices: IndexSpec | None = None,
    task: str = "std",
    grid: int = 8,
    fr_threshold: float = 0.1,
    bins: int = 5,
    threshold: float | None = None,
    top_fraction: float | None = None,
    landmark_scores: Any = None,
) -> dict[str, Any]:
    """How good a round's pseudo-labels are, measured against the pool's true landmarks.

    Args:
        pred: (N, L, 2) pseudo-labels, normalized crop coordinates (not clamped).
        truth: (N, L, 2) true landmarks, same coordinates.
        scores: (N,) per-face confidence: mean over landmarks of the winning raw score (the folder's scores).
        norm, norm_indices: the NME normalization of the dataset's primary metric (`metrics.functional.nme`).
        task: this round's curriculum task, one of `TASKS` ("std" full grid, "cls2" G/2, "cls3" G/4).
        grid: the full grid G (cells per side).
        fr_threshold: NME above which a face fails (the test metric's convention, `fr_auc`).
        bins: number of equal-count confidence bins.
        threshold, top_fraction: the filter this round used (`select_confident`; None: not set).
        landmark_scores: optional (N, L) per-landmark winning scores.

    Returns:
        A JSON-serializable dict: count, nme, median_nme, fr@<thr> (fractions), fr_threshold, cell_hit
        {"GxG": fraction of (face, landmark) pairs in the true cell} for G, G/2, G/4 (levels that divide),
        task_cell_hit, task_grid, confidence_bins [{score_lo, score_hi, mean_score, count, mean_nme, fr}],
        score_nme_spearman (None if undefined), selection [{rule, kept, kept_fraction, nme, fr, configured}],
        task, norm, grid, and landmark_confidence_spearman when landmark_scores is given.
    """
    pred, truth, scores, landmark_scores = _check_inputs(pred, truth, scores, landmark_scores)
    grid, task_factor = _check_grid_and_task(grid, task)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"pseudo_label_diagnostics: bins must be a positive int, got {bins!r}")
    pred_t, truth_t = torch.from_numpy(pred), torch.from_numpy(truth)
    nmes = nme(pred_t, truth_t, norm, norm_indices=norm_indices).cpu().numpy().astype(np.float64)  # (N,)

    # cell hits on every grid the curriculum supervises: (N, L) bool per level
    hits = {
        _grid_key(grid // f): float(cell_hits(pred, truth, grid // f).mean())
        for f in TASK_FACTORS
        if grid % f == 0 and grid // f >= 1
    }
    task_grid = _grid_key(grid // task_factor)

    diag: dict[str, Any] = {
        "count": int(len(scores)),
        "nme": float(nmes.mean()),
        "median_nme": float(np.median(nmes)),
        fr_key(fr_threshold): _fr(nmes, fr_threshold),
        "fr_threshold": float(fr_threshold),
        "cell_hit": hits,
        "task_cell_hit": hits[task_grid],
        "task_grid": task_grid,
        "confidence_bins": _confidence_bins(scores, nmes, int(bins), fr_threshold),
        "score_nme_spearman": spearman(scores, nmes),
        "selection": _selection_rows(scores, nmes, fr_threshold, threshold, top_fraction),
        "task": task,
        "norm": norm if isinstance(norm, str) else float(norm),
        "grid": grid,
    }
    if landmark_scores is not None:
        # per-landmark error / the face's norm (N, L): the terms whose mean over L is the face's NME
        norm_values = normalization(truth_t, norm, norm_indices=norm_indices).cpu().numpy()
        errors = np.linalg.norm(pred - truth, axis=2) / norm_values[:, None]
        diag["landmark_confidence_spearman"] = spearman(landmark_scores, errors)
    return diag


# -- presentation (cells, tables and figures: `pipnet_lit.presentation`) ----------------------------------
def diagnostics_markdown(diag: dict[str, Any], title: str = "") -> str:
    """A short Markdown block of `pseudo_label_diagnostics`: a summary line, a confidence-bin table and a
    selection table. NME, FR and cell hits in percent with 2 decimals."""
    fr_name = fr_key(diag["fr_threshold"])
    hits = ", ".join(f"{key} {percent_cell(value)}%" for key, value in diag["cell_hit"].items())
    summary = (
        f"Pseudo-labels vs truth ({diag['count']} faces, task {diag['task']}, norm {diag['norm']}): "
        f"NME {percent_cell(diag['nme'])}%, FR@{diag['fr_threshold']:.2f} {percent_cell(diag[fr_name])}%, "
        f"cell hit ({diag['task_grid']}) {percent_cell(diag['task_cell_hit'])}% [{hits}], "
        f"Spearman(score, NME) {correlation_cell(diag['score_nme_spearman'])}"
    )
    if "landmark_confidence_spearman" in diag:
        summary += f", per landmark {correlation_cell(diag['landmark_confidence_spearman'])}"
    bins = markdown_table(
        ["score range", "mean score", "faces", "NME %", "FR %"],
        [
            [
                f"{b['score_lo']:.4f} - {b['score_hi']:.4f}",
                f"{b['mean_score']:.4f}",
                str(b["count"]),
                percent_cell(b["mean_nme"]),
                percent_cell(b["fr"]),
            ]
            for b in diag["confidence_bins"]
        ],
    )
    selection = markdown_table(
        ["filter", "kept", "kept %", "NME %", "FR %"],
        [
            [
                r["rule"] + (" (configured)" if r.get("configured") else ""),
                str(r["kept"]),
                percent_cell(r["kept_fraction"]),
                percent_cell(r["nme"]),
                percent_cell(r["fr"]),
            ]
            for r in diag["selection"]
        ],
    )
    heading = f"### {title}\n\n" if title else ""
    return f"{heading}{summary}\n\n{bins}\n\n{selection}\n"


def summary_cells(diag: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of `pseudo_label_diagnostics` for a per-round table or W&B (fractions):
    ``pl_nme``, ``pl_fr@0.10``, ``pl_cell_hit`` (this task's grid), ``pl_spearman`` (None if undefined)."""
    fr_name = fr_key(diag["fr_threshold"])
    return {
        "pl_nme": diag["nme"],
        f"pl_{fr_name}": diag[fr_name],
        "pl_cell_hit": diag["task_cell_hit"],
        "pl_spearman": diag["score_nme_spearman"],
    }


def plot_confidence_vs_error(diag: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """PNG of mean NME (%) against mean score per confidence bin (marker area and label: faces per bin).

    Drawn on matplotlib's Agg canvas (no pyplot state); written atomically (temp file + os.replace).
    """
    bins = diag["confidence_bins"]
    xs = np.array([b["mean_score"] for b in bins])
    ys = np.array([100 * b["mean_nme"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    ax.plot(xs, ys, color="0.6", linewidth=1, zorder=1)
    ax.scatter(xs, ys, s=30 + 270 * counts / max(int(counts.max()), 1), zorder=2)
    for x, y, c in zip(xs, ys, counts, strict=True):
        ax.annotate(f"n={c}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize="small")
    ax.axhline(100 * diag["nme"], color="C1", linestyle="--", linewidth=1, label="all faces")
    ax.set(
        title=f"Pseudo-labels, task {diag['task']}: NME {percent_cell(diag['nme'])}% ({diag['count']} faces)",
        xlabel="mean confidence score per bin",
        ylabel=f"mean NME (%, {diag['norm']})",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight"))
