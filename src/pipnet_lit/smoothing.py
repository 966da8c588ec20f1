"""Temporal smoothing of video landmarks: the One Euro filter (Casiez, Roussel & Vogel, CHI 2012).

Per-frame landmarks jitter by a pixel or two even on a still face. The One Euro filter is an exponential
low-pass filter whose cutoff rises with the signal's speed: still points are smoothed hard (cutoff
``min_cutoff`` Hz), fast motion follows with little lag (cutoff ``min_cutoff + beta * |speed|``).
Here every landmark coordinate is filtered on its own (vectorized over (L, 2)), and the speed is measured in
face sizes per second (pixels / ``scale``, the face box's ``sqrt(w * h)``), so one ``beta`` suits small and
large faces alike.

`LandmarkSmoother` keeps one filter per face track across frames; faces are matched to the previous frame's
by box overlap (IoU), and a face without a match starts a new track (its first frame passes unchanged).
"""

from __future__ import annotations

import math

import numpy as np

from pipnet_lit.detect import box_iou

__all__ = ["LandmarkSmoother", "OneEuroFilter", "smoothing_factor"]


def smoothing_factor(dt: float, cutoff: float | np.ndarray) -> float | np.ndarray:
    """Exponential smoothing weight of the new sample: ``1 / (1 + tau / dt)``, ``tau = 1 / (2 pi cutoff)``."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over arrays of any fixed shape (e.g. (L, 2) landmarks).

    Args:
        min_cutoff: cutoff frequency (Hz) at zero speed; lower = smoother still points, more lag.
        beta: how fast the cutoff grows with speed (per unit of speed / scale); higher = less lag.
        d_cutoff: cutoff (Hz) of the low-pass filter on the speed estimate.

    ``filter(x, t, scale)`` returns the filtered array; the first call returns ``x`` unchanged.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"One Euro filter: min_cutoff and d_cutoff must be > 0 and beta >= 0, got min_cutoff="
                f"{min_cutoff}, beta={beta}, d_cutoff={d_cutoff}"
            )
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None
        self.t_prev: float | None = None

    def reset(self) -> None:
        self.x_prev = self.dx_prev = self.t_prev = None

    def filter(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t`` (seconds, increasing); ``scale`` divides the speed."""
        x = np.asarray(x, dtype=np.float64)
        if self.x_prev is None or self.t_prev is None:
            self.x_prev, self.dx_prev, self.t_prev = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self.x_prev.shape:
            raise ValueError(f"One Euro filter: sample shape {x.shape} differs from {self.x_prev.shape}")
        dt = float(t) - self.t_prev
        if dt <= 0:
            raise ValueError(f"One Euro filter: time must increase (t={t}, previous {self.t_prev})")
        dx = (x - self.x_prev) / dt
        a_d = smoothing_factor(dt, self.d_cutoff)
        dx_hat = a_d * dx + (1 - a_d) * self.dx_prev
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat) / float(scale)
        a = smoothing_factor(dt, cutoff)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev, self.t_prev = x_hat, dx_hat, float(t)
        return x_hat.copy()


class LandmarkSmoother:
    """One Euro filters for the faces of a video, one per track (faces matched by box IoU).

    ``smoother(t, boxes (N, 4), landmarks (N, L, 2)) -> (N, L, 2)`` smoothed landmarks, same order. A face
    matches the previous frame's face with the highest IoU above ``min_iou`` (greedy, each track once);
    tracks not seen in this frame end.
    """

    def __init__(
        self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0, min_iou: float = 0.3
    ) -> None:
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # validate the settings now
        self.settings = (float(min_cutoff), float(beta), float(d_cutoff))
        self.min_iou = float(min_iou)
        self._boxes = np.zeros((0, 4))
        self._filters: list[OneEuroFilter] = []

    def __call__(self, t: float, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if len(boxes) != len(landmarks):
            raise ValueError(f"LandmarkSmoother: {len(boxes)} boxes but {len(landmarks)} landmark sets")
        filters: list[OneEuroFilter | None] = [None] * len(boxes)
        if len(boxes) and len(self._boxes):
            iou = box_iou(boxes, self._boxes)
            for _ in range(min(iou.shape)):
                i, j = np.unravel_index(np.argmax(iou), iou.shape)
                if iou[i, j] < self.min_iou:
                    break
                filters[i] = self._filters[j]
                iou[i, :], iou[:, j] = -1.0, -1.0
        out = np.empty_like(landmarks)
        for i, box in enumerate(boxes):
            if filters[i] is None:
                filters[i] = OneEuroFilter(*self.settings)
            size = math.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1e-12))
            out[i] = filters[i].filter(landmarks[i], t, scale=size)
        self._boxes, self._filters = boxes, [f for f in filters if f is not None]
        return out
