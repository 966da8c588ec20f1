"""Pseudo-labels for curriculum self-training: one predict pass over the unlabeled pool, kept on disk.

A pseudo-label folder is a crop-cache annotation file over the pool's cached crops::

    annotations.txt   "<crop name> x1 y1 ... xL yL" (normalized to the crop, float32 values, not clamped)
    scores.txt        "<crop name> s" the mean over landmarks of the winning raw score (a confidence)
    manifest.json     round, task, the checkpoint it came from and its sha256, counts, filter, time

Official behaviour by default (lib/train_gssl.py): the previous round's model in eval mode, one forward per
stored crop, merged decode, float32 normalized coordinates, no clamping, no filtering, no test-time
augmentation, regenerated every round. Optional (off by default): keep only the faces whose mean max-score
clears ``threshold``, or the ``top_fraction`` most confident ones.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pipnet_lit.datasets.cache import (
    atomic_write_text,
    format_annotation_line,
    read_annotations,
    read_manifest,
    write_manifest,
)

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


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (a checkpoint's identity in manifests)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@torch.no_grad()
def predict_pool(
    predict_fn: Any, dataset: Dataset, batch_size: int = 32, num_workers: int = 0, device: str = "cpu"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Run ``predict_fn(images) -> (landmarks (B, L, 2), max_score (B, L))`` over a crop dataset.

    Returns the dataset's names, landmarks (N, L, 2) float32 and mean max-scores (N,) float32, in order.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    landmarks, scores, order = [], [], []
    for batch in loader:
        lms, max_score = predict_fn(batch["image"].to(device))
        landmarks.append(lms.float().cpu())
        scores.append(max_score.float().mean(dim=1).cpu())
        order.append(batch["index"])
    index = torch.cat(order).numpy()
    names = [dataset.names[i] for i in index]
    return names, torch.cat(landmarks).numpy(), torch.cat(scores).numpy()


def select_confident(scores: np.ndarray, threshold: float | None = None, top_fraction: float | None = None):
    """Boolean mask (N,) of the pseudo-labels to keep: all (default), score >= threshold, or the top
    fraction by score (ties broken by position, so the selection is deterministic)."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.ones(len(scores), dtype=bool)
    if threshold is not None:
        keep &= scores >= float(threshold)
    if top_fraction is not None:
        if not 0.0 < float(top_fraction) <= 1.0:
            raise ValueError(f"ssl.pseudo_labels.top_fraction must be in (0, 1], got {top_fraction}")
        n = int(np.ceil(float(top_fraction) * len(scores)))
        order = np.argsort(-scores, kind="stable")[:n]
        top = np.zeros(len(scores), dtype=bool)
        top[order] = True
        keep &= top
    return keep


def write_pseudo_labels(
    folder: str | Path,
    names: list[str],
    landmarks: np.ndarray,
    scores: np.ndarray,
    manifest: dict[str, Any],
    keep: np.ndarray | None = None,
) -> Path:
    """Write the kept pseudo-labels in the crop-cache annotation format; the manifest last."""
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


def read_pseudo_labels(folder: str | Path) -> PseudoLabels:
    """Read a folder written by :func:`write_pseudo_labels` (a missing manifest means an unfinished one)."""
    folder = Path(folder)
    manifest = read_manifest(folder / MANIFEST_NAME)
    if manifest is None:
        raise FileNotFoundError(f"{folder} holds no finished pseudo-labels (no readable {MANIFEST_NAME})")
    entries = read_annotations(folder / ANNOTATIONS_NAME)
    scores = dict(
        (line.split()[0], float(line.split()[1]))
        for line in (folder / SCORES_NAME).read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    names = [n for n, _ in entries]
    landmarks = np.stack([lms for _, lms in entries]) if entries else np.zeros((0, 0, 2))
    return PseudoLabels(names, landmarks, np.array([scores[n] for n in names], dtype=np.float64), manifest)


def merged_with_scores(module: Any) -> Any:
    """``images -> (landmarks, max_score)`` for a PIPNetModule: its inference path (merged decode unless the
    model says otherwise), the same one evaluation uses."""

    def predict(images: Tensor) -> tuple[Tensor, Tensor]:
        out = module.predictor.landmarks(images)
        return out.landmarks, out.scores

    return predict
