"""Face-box geometry shared by every reader, the crop cache, ``predict_step`` and the predictor.

Every official PIPNet crop has the same shape once its box is known: the crop is
``image[int(y0):int(y1), int(x0):int(x1)]`` resized to ``input_size`` with ``cv2.resize`` (bilinear, aspect
not kept), and the landmarks are normalized by the *float* box, ``(p - (x0, y0)) / (x1 - x0, y1 - y0)``.
What differs between datasets is how the box is found (from landmarks, from a given rectangle, enlarged
how much on which side, clamped where, truncated when). Those rules live here as plain functions, each
written with the exact float expression of the official code (``(scale - 1) / 2`` in float, then ``int()``
where it truncates), because a rounded literal moves an integer box edge by one pixel.

Coordinates: pixels of the source image, 0-based, as the annotation files give them (300W ``.pts`` values
are used as they are, like the official code). Normalized landmarks are fractions of the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CropBox",
    "box_from_points_300w",
    "clip_points",
    "crop_and_resize",
    "denormalize_points",
    "expand_box",
    "normalize_points",
    "clamp_box",
    "margin",
]


@dataclass(frozen=True)
class CropBox:
    """A crop box in source-image pixels: ``x0 <= x < x1``, ``y0 <= y < y1`` (floats, as computed).

    The crop takes ``image[int(y0):int(y1), int(x0):int(x1)]``; landmarks are normalized by the float box.
    """

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def slices(self) -> tuple[slice, slice]:
        """The official ``int()`` crop bounds as (rows, cols) slices."""
        return slice(int(self.y0), int(self.y1)), slice(int(self.x0), int(self.x1))

    def xywh(self) -> tuple[float, float, float, float]:
        """``(x0, y0, width, height)``: the frame that maps normalized landmarks back to pixels."""
        return (self.x0, self.y0, self.width, self.height)

    def check(self, source: str = "") -> CropBox:
        """Raise a clear error when the integer crop would be empty."""
        rows, cols = self.slices()
        if not (rows.stop > rows.start and cols.stop > cols.start) or not (
            self.width > 0 and self.height > 0
        ):
            where = f"{source}: " if source else ""
            raise ValueError(
                f"{where}empty face box x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1} after "
                "clamping to the image; is the box inside the image and in pixel units?"
            )
        return self


def margin(size: float, scale: float) -> float:
    """Official per-side enlargement ``size * (scale - 1) / 2``, evaluated as the official code does."""
    return size * (scale - 1) / 2


def expand_box(
    x0: float, y0: float, x1: float, y1: float, left: float, top: float, right: float, bottom: float
) -> tuple[float, float, float, float]:
    """Move each edge outwards by the given pixel amounts (a negative ``top`` moves the top edge down)."""
    return x0 - left, y0 - top, x1 + right, y1 + bottom


def clamp_box(x0: float, y0: float, x1: float, y1: float, image_w: int, image_h: int) -> CropBox:
    """Official clamp: ``max(x0, 0)``, ``min(x1, W - 1)`` (same for y); values keep their type."""
    return CropBox(max(x0, 0), max(y0, 0), min(x1, image_w - 1), min(y1, image_h - 1))


def clip_points(points: np.ndarray, image_w: int, image_h: int) -> np.ndarray:
    """Clip (L, 2) pixel landmarks to ``[0, W] x [0, H]`` (WFLW / AFLW, before normalizing)."""
    pts = np.asarray(points, dtype=np.float64)
    return np.stack([np.clip(pts[:, 0], 0, image_w), np.clip(pts[:, 1], 0, image_h)], axis=1)


def box_from_points_300w(points: np.ndarray, image_w: int, image_h: int, scale: float = 1.1) -> CropBox:
    """The official 300W box from (L, 2) ``.pts`` landmarks (``lib/preprocess.py``, ``process_300w``).

    Points are truncated toward zero (``int(float(x))``); box = min/max of those integers;
    ``xmin -= int((scale - 1) / 2 * w)``, ``w = int(w * scale)``, ``xmin = max(xmin, 0)``,
    ``w = min(w, W - xmin - 1)`` (same for y). Returns ``CropBox(xmin, ymin, xmin + w, ymin + h)`` (ints).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"box_from_points_300w: points must have shape (L, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("box_from_points_300w: points contain NaN or inf")
    ints = np.trunc(pts).astype(np.int64)
    # Python ints and floats below, so every product and truncation matches the official code bit for bit.
    xmin, ymin = int(ints[:, 0].min()), int(ints[:, 1].min())
    w = int(ints[:, 0].max()) - xmin
    h = int(ints[:, 1].max()) - ymin
    xmin -= int((scale - 1) / 2 * w)
    ymin -= int((scale - 1) / 2 * h)
    w = int(w * scale)
    h = int(h * scale)
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    w = min(w, int(image_w) - xmin - 1)
    h = min(h, int(image_h) - ymin - 1)
    return CropBox(xmin, ymin, xmin + w, ymin + h)


def crop_and_resize(image_bgr: np.ndarray, box: CropBox, input_size: int) -> np.ndarray:
    """``image[int(y0):int(y1), int(x0):int(x1)]`` resized to (input_size, input_size) with ``cv2.resize``."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"crop: image must be (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
    rows, cols = box.check().slices()
    h, w = image_bgr.shape[:2]
    if rows.start < 0 or cols.start < 0 or rows.stop > h or cols.stop > w:
        raise ValueError(
            f"crop box x0={box.x0}, y0={box.y0}, x1={box.x1}, y1={box.y1} reaches outside the {w}x{h} image; "
            "clamp it first (geometry.clamp_box)"
        )
    patch = image_bgr[rows, cols]
    return cv2.resize(patch, (int(input_size), int(input_size)), interpolation=cv2.INTER_LINEAR)


def normalize_points(points: np.ndarray, box: CropBox) -> np.ndarray:
    """(L, 2) pixels -> (L, 2) float64 fractions of the box, ``(p - (x0, y0)) / (x1 - x0, y1 - y0)``."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts - np.array([box.x0, box.y0], dtype=np.float64)) / np.array(
        [box.width, box.height], dtype=np.float64
    )


def denormalize_points(normalized, frame_xywh):
    """Inverse of :func:`normalize_points`: (..., L, 2) fractions -> pixels.

    ``frame_xywh`` is a :class:`CropBox` or ``(x0, y0, w, h)`` per sample: an array / tensor (..., 4) that
    broadcasts against the landmarks' leading dimensions (numpy or torch alike).
    """
    frame = frame_xywh
    if isinstance(frame, CropBox):
        frame = np.asarray(frame.xywh(), dtype=np.float64)
    origin = frame[..., None, 0:2]
    size = frame[..., None, 2:4]
    return normalized * size + origin
