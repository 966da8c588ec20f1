"""Mean face of a training set (official lib/preprocess.py, gen_meanface)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def compute_meanface(landmarks: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Mean of normalized landmarks over the training set, accumulated in float64 like the official code.

    Args:
        landmarks: (N, L, 2) normalized landmarks (tensor, array or nested lists), N >= 1.

    Returns:
        (L, 2) float64 mean face: a tensor (on the input's device) for tensor input, else a numpy array.
    """
    is_tensor = isinstance(landmarks, Tensor)
    device = landmarks.device if is_tensor else None
    arr = (
        landmarks.detach().cpu().to(torch.float64).numpy() if is_tensor else np.asarray(landmarks, np.float64)
    )
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise ValueError(f"compute_meanface: landmarks must have shape (N, L, 2), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"compute_meanface: need at least one sample and one landmark, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        samples = np.unique(np.nonzero(~np.isfinite(arr))[0])
        raise ValueError(
            f"compute_meanface: landmarks of samples {samples[:10].tolist()}"
            f"{' ...' if samples.size > 10 else ''} contain NaN/inf; fix or drop those annotations"
        )
    n, num_lms, _ = arr.shape
    # Official: one row of 2L coordinates per sample, np.mean over rows.
    mean = np.mean(arr.reshape(n, num_lms * 2), axis=0).reshape(num_lms, 2)
    if is_tensor:
        return torch.from_numpy(mean).to(device)
    return mean
