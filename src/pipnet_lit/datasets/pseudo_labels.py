"""The pseudo-label folder: landmarks for an unlabeled pool's cached crops, in the crop cache's own format.

A self-training round writes one, and the next data module reads it as training faces (with a task)::

    annotations.txt   "<crop name> x1 y1 ... xL yL" (normalized to the crop, float32 values, not clamped)
    scores.txt        "<crop name> s": the mean over landmarks of the winning raw score (a confidence)
    manifest.json     written last (a folder without it is unfinished): round, task, the reuse ``key``
                      (checkpoint sha256, pool, settings), counts, time

Every file is written through a temporary name and renamed, so a kill leaves an unfinished folder (no
manifest) that is remade, never one that reads as complete with half its lines.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipnet_lit.datasets.cache import (
    atomic_write_text,
    format_annotation_line,
    read_annotations,
    read_manifest,
    write_manifest,
)
from pipnet_lit.datasets.records import DataFormatError, read_text_lines

ANNOTATIONS_NAME = "annotations.txt"
SCORES_NAME = "scores.txt"
MANIFEST_NAME = "manifest.json"


@dataclass
class PseudoLabels:
    """Pseudo-labels of a pool: crop names, landmarks (N, L, 2) normalized, confidences (N,)."""

    names: list[str]
    landmarks: np.ndarray
    scores: np.ndarray
    manifest: dict[str, Any]


def write_pseudo_labels(
    folder: str | Path,
    names: list[str],
    landmarks: np.ndarray,
    scores: np.ndarray,
    manifest: dict[str, Any],
    keep: np.ndarray | None = None,
) -> Path:
    """Write the kept pseudo-labels (``keep`` (N,) bool, default all) in the crop-cache annotation format;
    the manifest last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    keep = np.ones(len(names), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    lines, score_lines = [], []
    for name, lms, score, kept in zip(names, landmarks, scores, keep, strict=True):
        if kept:
            lines.append(format_annotation_line(name, np.asarray(lms, dtype=np.float32)))
            score_lines.append(f"{name} {float(score)!r}")
    atomic_write_text(folder / ANNOTATIONS_NAME, "".join(f"{line}\n" for line in lines))
    atomic_write_text(folder / SCORES_NAME, "".join(f"{line}\n" for line in score_lines))
    write_manifest(
        folder / MANIFEST_NAME,
        {
            **manifest,
            "count": int(keep.sum()),
            "count_pool": len(names),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    return folder


def read_pseudo_label_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The folder's manifest (None: missing or unreadable, i.e. an unfinished folder)."""
    return read_manifest(Path(folder) / MANIFEST_NAME)


def _read_scores(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise DataFormatError(
            f"{path}: missing (a pseudo-label folder holds {SCORES_NAME} beside its labels)"
        )
    scores: dict[str, float] = {}
    for line_no, line in enumerate(read_text_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            if len(tokens) != 2:
                raise ValueError
            value = float(tokens[1])
            if not math.isfinite(value):
                raise ValueError
        except ValueError:
            raise DataFormatError(
                f"{path}:{line_no}: expected '<crop name> <score>' with a finite score, found "
                f"{line.rstrip()[:80]!r}; delete the pseudo-label folder to make it again"
            ) from None
        scores[tokens[0]] = value
    return scores


def read_pseudo_labels(folder: str | Path) -> PseudoLabels:
    """Read a folder written by :func:`write_pseudo_labels`.

    A missing manifest means an unfinished folder (FileNotFoundError); a malformed line is a
    `DataFormatError` naming the file and line.
    """
    folder = Path(folder)
    manifest = read_pseudo_label_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} holds no finished pseudo-labels (no readable {MANIFEST_NAME})")
    annotations = folder / ANNOTATIONS_NAME
    entries = read_annotations(annotations, unique_hint="delete the pseudo-label folder to make it again")
    scores = _read_scores(folder / SCORES_NAME)
    names = [n for n, _ in entries]
    missing = [n for n in names if n not in scores]
    if missing:
        raise DataFormatError(
            f"{folder / SCORES_NAME}: no score for {len(missing)} face(s) of {ANNOTATIONS_NAME} (e.g. "
            f"{missing[0]!r}); delete the pseudo-label folder to make it again"
        )
    count = manifest.get("count")
    if count is not None and (type(count) is not int or count != len(names)):
        raise DataFormatError(
            f"{annotations}: {len(names)} faces, its manifest ({folder / MANIFEST_NAME}) says count "
            f"{count!r}; the folder is damaged: delete it to make it again"
        )
    landmarks = np.stack([lms for _, lms in entries]) if entries else np.zeros((0, 0, 2))
    return PseudoLabels(names, landmarks, np.array([scores[n] for n in names], dtype=np.float64), manifest)
