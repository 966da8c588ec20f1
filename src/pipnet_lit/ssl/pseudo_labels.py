"""Pseudo-labels for curriculum self-training: one predict pass over the unlabeled pool, and the filter.

The folder they are kept in is the data layer's (`pipnet_lit.datasets.pseudo_labels`). Official behaviour
by default (lib/train_gssl.py): the previous round's model in eval mode, one forward per stored crop,
merged decode, float32 normalized coordinates, no clamping, no filtering, no test-time augmentation,
regenerated every round. Optional (off by default): keep only the faces whose mean max-score clears
``threshold``, or the ``top_fraction`` most confident ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pipnet_lit.faults import kill_point
from pipnet_lit.files import file_sha256  # re-exported: older code imports it from here

__all__ = ["file_sha256", "merged_with_scores", "predict_pool", "select_confident"]


@torch.no_grad()
def predict_pool(
    predict_fn: Any, dataset: Dataset, batch_size: int = 32, num_workers: int = 0, device: str = "cpu"
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Run ``predict_fn(images) -> (landmarks (B, L, 2), max_score (B, L))`` over a crop dataset.

    Returns the dataset's names, landmarks (N, L, 2) float32, each face's mean winning score (N,) float32
    (its confidence) and the per-landmark winning scores (N, L) float32, in the dataset's order.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    landmarks, scores, order = [], [], []
    for batch in loader:
        lms, max_score = predict_fn(batch["image"].to(device))
        landmarks.append(lms.float().cpu())
        scores.append(max_score.float().cpu())
        order.append(batch["index"])
        kill_point("pseudo_labels")
    index = torch.cat(order).numpy()
    names = [dataset.names[i] for i in index]
    per_landmark = torch.cat(scores)
    return names, torch.cat(landmarks).numpy(), per_landmark.mean(dim=1).numpy(), per_landmark.numpy()


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


def merged_with_scores(module: Any) -> Any:
    """``images -> (landmarks, max_score)`` for a PIPNetModule: its inference path (merged decode unless the
    model says otherwise), the same one evaluation uses."""

    def predict(images: Tensor) -> tuple[Tensor, Tensor]:
        out = module.graph.landmarks(images)
        return out.landmarks, out.scores

    return predict
