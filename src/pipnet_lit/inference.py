"""The predictor: images or face crops in, landmarks out (no Lightning).

`Predictor` holds the inference core (`pipnet_lit.landmark_graph.LandmarkGraph`: network + neighbour tables
+ decode) and adds what an application needs around it: image reading, the crop -> tensor preprocessing
(ImageNet constants), crop / uncrop (the arithmetic itself in `pipnet_lit.datasets.geometry`) and batching.

Build one from our checkpoint or from the official code's weights::

    predictor = Predictor.from_checkpoint("model.ckpt", device="cuda")
    predictor = Predictor.from_official("epoch59.pth", "meanface.txt", backbone="resnet18",
                                        num_landmarks=68, num_nb=10, net_stride=32, input_size=256)
    faces = predictor("photo.jpg", boxes_xyxy=[[x0, y0, x1, y1]])  # faces.landmarks (N, L, 2) pixels
    crops = predictor.crops(batch)                                  # ready (B, S, S, 3) BGR crops

Coordinates. Landmarks come back in the convention of the training annotations (300W: the ``.pts``
numbers as they are), in source-image pixels for `predictor(image, boxes_xyxy)` and as fractions of the
crop (0 = left/top edge, 1 = right/bottom edge) for `predictor.crops`. Boxes here are ``xyxy``:
``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive edges); a box is clamped to the image
(``[0, W] x [0, H]``) and truncated to integers, so the pixels the network sees are exactly the frame the
landmarks are mapped back with. (The dataset cache and the metrics use ``xywh`` boxes; names say which.)

Scores. Each landmark's score is the maximum of its score map (the raw head output, trained towards 1 at
the landmark's cell and 0 elsewhere): a confidence, not a calibrated probability.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from pipnet_lit.checkpoints import CHECKPOINT_FORMAT, read_checkpoint, write_checkpoint
from pipnet_lit.datasets.geometry import CropBox, crop_and_resize, denormalize_points
from pipnet_lit.landmark_graph import CropPrediction, LandmarkGraph, is_on
from pipnet_lit.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from pipnet_lit.pip import Neighbors, PIPOutputs

__all__ = [
    "CHECKPOINT_FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DEFAULT_MAX_PIXELS",
    "CropPrediction",
    "FacePrediction",
    "ImageReadError",
    "ImageTooLargeError",
    "LandmarkGraph",
    "Predictor",
    "crop_faces",
    "load_image",
    "preprocess",
    "uncrop",
]


class ImageReadError(ValueError):
    """An image that cannot be read or has an unusable layout; the message names the file."""


# -- preprocessing, crop, uncrop ----------------------------------------------------------------------


def preprocess(crops: np.ndarray | Tensor, device: torch.device | str | None = None) -> Tensor:
    """(B, S, S, 3) or (S, S, 3) uint8 BGR crops -> (B, 3, S, S) float32 ImageNet-normalized RGB.

    ``(rgb / 255 - IMAGENET_MEAN) / IMAGENET_STD`` per channel, the values of the training / evaluation
    transform (`datasets.transforms.build_eval_transform`). The uint8 pixels are moved to ``device`` first
    (a quarter of the float bytes), then converted there.
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    if x.dtype != torch.uint8:
        raise ValueError(f"preprocess: crops must be uint8 BGR images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"preprocess: crops must have shape (B, S, S, 3) (BGR), got {tuple(x.shape)}")
    x = x.to(device) if device is not None else x
    x = x.flip(-1).permute(0, 3, 1, 2).to(torch.float32)  # BGR -> RGB, channels first
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).contiguous()


def _as_boxes(boxes: Any) -> np.ndarray:
    """Boxes as a float64 (N, 4) array of ``(x0, y0, x1, y1)``; clear errors otherwise."""
    if isinstance(boxes, CropBox):
        boxes = [[boxes.x0, boxes.y0, boxes.x1, boxes.y1]]
    elif isinstance(boxes, Sequence) and boxes and isinstance(boxes[0], CropBox):
        boxes = [[b.x0, b.y0, b.x1, b.y1] for b in boxes]
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"boxes must be numbers (N, 4) = (x0, y0, x1, y1) in pixels, got {boxes!r}") from err
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) = (x0, y0, x1, y1), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"boxes contain NaN or inf: {arr.tolist()}")
    return arr


def crop_faces(image_bgr: np.ndarray, boxes_xyxy: Any, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each box out of the image and resize it to the network input.

    Each ``(x0, y0, x1, y1)`` is clamped to the image, ``[0, W] x [0, H]`` (x1, y1 are exclusive edges, so a
    box of the whole image keeps every pixel; the official dataset crops clamp to ``W - 1``, see
    `geometry.clamp_box`), truncated with ``int()`` and cropped as ``image[y0:y1, x0:x1]`` resized with
    ``cv2.resize`` (`geometry.crop_and_resize`). Returns the crops (N, S, S, 3) uint8 BGR and the integer
    crop boxes (N, 4) float64 ``(x0, y0, x1, y1)`` that `uncrop` maps landmarks back with.
    """
    arr = _as_boxes(boxes_xyxy)
    h, w = image_bgr.shape[:2]
    crops = np.empty((len(arr), input_size, input_size, 3), dtype=np.uint8)
    frames = np.empty((len(arr), 4), dtype=np.float64)
    for i, (x0, y0, x1, y1) in enumerate(arr):
        box = CropBox(int(max(x0, 0)), int(max(y0, 0)), int(min(x1, w)), int(min(y1, h)))
        try:
            box.check(f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) on the {w}x{h} image")
        except ValueError as err:
            raise ValueError(str(err)) from None
        crops[i] = crop_and_resize(image_bgr, box, input_size)
        frames[i] = (box.x0, box.y0, box.x1, box.y1)
    return crops, frames


def uncrop(landmarks: np.ndarray | Tensor, boxes_xyxy: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """(..., L, 2) crop fractions -> source-image pixels, for boxes (..., 4) ``(x0, y0, x1, y1)``.

    ``x = x0 + u * (x1 - x0)``, ``y = y0 + v * (y1 - y0)`` (`geometry.denormalize_points`), numpy or torch.
    """
    boxes = boxes_xyxy
    frames_xywh = (
        boxes[..., :4].clone() if isinstance(boxes, Tensor) else np.array(boxes[..., :4], dtype=float)
    )
    frames_xywh[..., 2:4] = boxes[..., 2:4] - boxes[..., 0:2]
    return denormalize_points(landmarks, frames_xywh)


#: Default pixel limit of `load_image` (width x height): 100 megapixels, far above any photo a face detector
#: needs and far below what exhausts memory (an 8-bit BGR image of this size is 300 MB once decoded).
DEFAULT_MAX_PIXELS = 100_000_000

#: OpenCV's own decoding limit when the environment variable does not set one (``1 << 30`` pixels).
_OPENCV_MAX_PIXELS_DEFAULT = 1 << 30


class ImageTooLargeError(ImageReadError):
    """An image with more pixels than the ``max_pixels`` limit (or than OpenCV decodes), refused before it is
    decoded when the file's header tells its size."""


def load_image(
    image: str | Path | np.ndarray | Any,
    color: Literal["bgr", "rgb"] = "bgr",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """An image file path, PIL image or numpy array -> (H, W, 3) uint8 BGR (a new array for paths / PIL).

    numpy arrays are taken as BGR (OpenCV's order) unless ``color="rgb"``; (H, W) grayscale and
    (H, W, 4) arrays with alpha are converted. Raises `ImageReadError` naming the file when it cannot be
    decoded, and `ImageTooLargeError` (one) for an image of more than ``max_pixels`` pixels (width x height;
    0 or None: no limit of ours): a file's size is read from its header (PIL, which reads headers lazily)
    before a byte of pixels is decoded, so a hostile "decompression bomb" is refused before memory runs
    out. OpenCV's own limit (the environment variable ``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default)
    still applies to files.
    """
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if max_pixels is not None and int(max_pixels) < 0:
        raise ValueError(f"max_pixels must be >= 0 (0 or None: no limit), got {max_pixels}")
    limit = int(max_pixels or 0)
    if isinstance(image, (str, Path)):
        return _read_image_file(Path(image), limit)
    if type(image).__module__.startswith("PIL."):
        width, height = image.size
        _check_pixels(f"the {width}x{height} PIL image", width * height, limit)
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise ImageReadError(
            f"image must be a file path, a PIL image or a numpy array, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ImageReadError(f"image arrays must be uint8 (0..255), got {image.dtype}")
    if image.ndim >= 2:
        height, width = image.shape[:2]
        _check_pixels(f"the {width}x{height} image array", width * height, limit)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ImageReadError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[..., ::-1]) if color == "rgb" else image


def _check_pixels(
    what: str, pixels: int, limit: int, *, at_least: bool = False, header: bool = False
) -> None:
    """`ImageTooLargeError` when ``pixels`` (``at_least``: a lower bound) exceed ``limit`` (0: none)."""
    if limit and pixels > limit:
        size = f"more than {pixels - 1:,}" if at_least else f"{pixels:,}"
        when = " (read from its header, before decoding it)" if header else ""
        raise ImageTooLargeError(
            f"{what} has {size} pixels, more than max_pixels={limit:,}{when}: shrink the image or raise "
            "max_pixels (0: no limit)"
        )


def _header_size(path: Path) -> tuple[str | None, int | None, bool]:
    """What the file's header says, without decoding pixels: ``("WxH", pixels, False)``; ``(None, n, True)``
    when PIL refuses it as a decompression bomb (more than ``n - 1`` pixels); ``(None, None, False)`` when
    PIL cannot tell (not an image, a format PIL lacks, PIL not installed): OpenCV decides then."""
    try:
        from PIL import Image
    except ImportError:  # pillow comes with torchvision; without it the decoded size is checked instead
        return None, None, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
        return f"{width}x{height}", int(width) * int(height), False
    except Image.DecompressionBombError as err:  # PIL's own limit, 2 * Image.MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(err))
        if found:
            return None, int(found.group(1)), False
        bound = 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        return None, bound, True
    except Exception:  # not an image PIL knows, cut short, unreadable: OpenCV decides
        return None, None, False


def _read_image_file(path: Path, limit: int) -> np.ndarray:
    if not path.is_file():
        raise ImageReadError(f"cannot read image {path}: no such file")
    size, pixels, at_least = _header_size(path)
    if pixels is not None:
        what = f"image {path} ({size})" if size else f"image {path}"
        _check_pixels(what, pixels, limit, at_least=at_least, header=True)
    data = np.fromfile(str(path), dtype=np.uint8)  # not cv2.imread: non-ASCII paths work everywhere
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as err:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(err):
            told = f"{size}, {pixels:,} pixels" if size else f"{pixels:,} pixels" if pixels else ""
            raise ImageTooLargeError(
                f"cannot read image {path}" + (f" ({told})" if told else "") + ": more pixels than OpenCV "
                f"decodes, OPENCV_IO_MAX_IMAGE_PIXELS={_opencv_max_pixels():,} (an environment variable, "
                f"default 2**30; our own limit is max_pixels={limit}, 0: off): shrink the image, or raise "
                "both limits"
            ) from None
        decoded = None
    if decoded is None:
        raise ImageReadError(
            f"cannot read image {path}: OpenCV cannot decode it (not an image, truncated, or an "
            "unsupported format)"
        )
    height, width = decoded.shape[:2]
    _check_pixels(f"image {path} ({width}x{height})", width * height, limit)  # the header could not tell
    return decoded


def _opencv_max_pixels() -> int:
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", _OPENCV_MAX_PIXELS_DEFAULT))
    except ValueError:
        return _OPENCV_MAX_PIXELS_DEFAULT


# -- results -------------------------------------------------------------------------------------------


@dataclass
class FacePrediction:
    """Landmarks of the faces of one image (numpy, CPU).

    landmarks: (N, L, 2) float64 source-image pixels; scores: (N, L) float32 per-landmark score;
    boxes_xyxy: (N, 4) float64 integer crop boxes ``(x0, y0, x1, y1)`` actually cropped (after clamping);
    crop_landmarks: (N, L, 2) float32 the same landmarks as fractions of each crop.
    """

    landmarks: np.ndarray
    scores: np.ndarray
    boxes_xyxy: np.ndarray
    crop_landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def boxes(self) -> np.ndarray:
        """Deprecated name of `boxes_xyxy` (kept for one release)."""
        return self.boxes_xyxy


# -- the predictor -------------------------------------------------------------------------------------


class Predictor:
    """Face crops or an image with boxes -> landmarks: the inference core (`LandmarkGraph`: network +
    neighbour tables + decode) plus preprocessing, crop / uncrop and batching.

    Args:
        graph: the inference core (`read_checkpoint(path).graph()`, `LandmarkGraph(net, meanface)`). Its
            mode is left as it is (`from_checkpoint` / `from_official` return it in eval mode); `to(device)`
            moves it.
        batch_size: faces per forward pass in `crops` / `__call__`.
    """

    def __init__(self, graph: LandmarkGraph, *, batch_size: int = 32) -> None:
        if not isinstance(graph, LandmarkGraph):
            raise TypeError(
                f"Predictor(graph): expected a LandmarkGraph, got {type(graph).__name__}; build one with "
                "LandmarkGraph(net, meanface) or Predictor.from_network(net, meanface, ...)"
            )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.graph = graph
        self.batch_size = int(batch_size)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_network(
        cls,
        net: nn.Module,
        meanface: np.ndarray | Tensor,
        *,
        num_nb: int | None = None,
        input_size: int | None = None,
        merge: bool = True,
        batch_size: int = 32,
    ) -> Predictor:
        """A predictor around ``net`` and its mean face (see `LandmarkGraph` for the arguments)."""
        graph = LandmarkGraph(net, meanface, merge=merge, num_nb=num_nb, input_size=input_size)
        return cls(graph, batch_size=batch_size)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: torch.device | str = "cpu",
        num_landmarks: int | None = None,
        merge: bool | None = None,
        batch_size: int = 32,
    ) -> Predictor:
        """Load a pipnet-lit checkpoint (training's ``*.ckpt`` or `pipnet_lit.convert`'s) with
        `pipnet_lit.checkpoints.read_checkpoint`: no Lightning, no ImageNet weights. ``num_landmarks``, when
        given, must equal the checkpoint's; ``merge`` None keeps the checkpoint's setting."""
        graph = read_checkpoint(path, num_landmarks=num_landmarks).graph(merge)
        return cls(graph, batch_size=batch_size).to(device)

    @classmethod
    def from_official(
        cls,
        weights: str | Path | dict[str, Tensor],
        meanface: str | Path | np.ndarray,
        backbone: str,
        num_landmarks: int,
        num_nb: int,
        net_stride: int,
        input_size: int,
        *,
        device: torch.device | str = "cpu",
        merge: bool = True,
        batch_size: int = 32,
        name: str | None = None,
    ) -> Predictor:
        """Weights saved by the official code (``epoch59.pth``) with its ``meanface.txt``: see
        `pipnet_lit.convert.official_graph`, which reads and checks them."""
        from pipnet_lit.convert import official_graph

        graph = official_graph(
            weights,
            meanface,
            backbone=backbone,
            num_landmarks=num_landmarks,
            num_nb=num_nb,
            net_stride=net_stride,
            input_size=input_size,
            merge=merge,
            name=name,
        )
        return cls(graph, batch_size=batch_size).to(device)

    def save(self, path: str | Path, *, dataset: str | None = None, **provenance: Any) -> Path:
        """Write this predictor's model as a checkpoint (`pipnet_lit.checkpoints.write_checkpoint`)."""
        return write_checkpoint(self.graph, path, dataset=dataset, **provenance)

    # -- what it wraps -----------------------------------------------------------------------------
    @property
    def net(self) -> nn.Module:
        return self.graph.net

    @property
    def meanface(self) -> Tensor:
        """(L, 2) float64 mean face on the CPU."""
        return self.graph.meanface_cpu

    @property
    def merge(self) -> bool:
        return self.graph.merge

    @property
    def num_nb(self) -> int:
        return self.graph.num_nb

    @property
    def input_size(self) -> int:
        return self.graph.input_size

    @property
    def num_landmarks(self) -> int:
        return self.graph.num_landmarks

    @property
    def device(self) -> torch.device:
        """The device of the network's first parameter or buffer (the tables' when it has none)."""
        for tensor in (*self.net.parameters(), *self.net.buffers()):
            return tensor.device
        return self.graph.device

    def to(self, device: torch.device | str) -> Predictor:
        """Move the network and its tables (in place) to ``device``; returns self."""
        self.graph.to(device)
        return self

    def neighbors(self, device: torch.device | str | None = None) -> Neighbors:
        """The neighbour tables on ``device`` (default: the graph's). Copies when ``device`` is elsewhere:
        the predictor's own tables stay with its network (``to()`` moves both)."""
        tables = self.graph.neighbors()
        return tables if device is None or is_on(tables.indices.device, device) else tables.to(device)

    # -- prediction --------------------------------------------------------------------------------
    def decode(self, outputs: PIPOutputs) -> CropPrediction:
        """Head outputs -> landmarks (B, L, 2) crop fractions and scores (B, L) (`LandmarkGraph.decode`)."""
        return self.graph.decode(outputs)

    def landmarks(self, images: Tensor) -> CropPrediction:
        """Forward + decode of preprocessed images (B, 3, S, S) on the network's device; changes neither the
        network's mode nor the autograd state. `crops` and `__call__` are the inference entry points."""
        return self.graph.landmarks(images)

    def crops(self, batch: np.ndarray | Tensor) -> CropPrediction:
        """Landmarks of ready crops, in batches of ``batch_size``, under ``torch.inference_mode``.

        ``batch``: (B, S, S, 3) uint8 BGR crops (numpy or tensor; one (S, S, 3) crop also works) or
        (B, 3, S, S) float tensors already `preprocess`-ed. Returns CPU tensors: landmarks (B, L, 2) float32
        crop fractions, scores (B, L) float32.
        """
        is_float = isinstance(batch, Tensor) and batch.is_floating_point()
        if is_float:
            if batch.ndim != 4 or batch.shape[1] != 3:
                raise ValueError(
                    f"crops: float tensors must be (B, 3, S, S) preprocessed, got {tuple(batch.shape)}"
                )
            size = tuple(batch.shape[-2:])
        else:
            arr = batch if isinstance(batch, Tensor) else np.asarray(batch)
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(
                    f"crops: expected (B, S, S, 3) uint8 BGR crops or (B, 3, S, S) float tensors, got shape "
                    f"{tuple(arr.shape)}"
                )
            size = tuple(arr.shape[1:3])
            batch = arr
        if size != (self.input_size, self.input_size):
            raise ValueError(
                f"crops must be {self.input_size}x{self.input_size} (the model's input_size), got "
                f"{size[1]}x{size[0]}; crop and resize them first (predictor(image, boxes) does it)"
            )
        device = self.device
        landmarks, scores = [], []
        with torch.inference_mode():
            for start in range(0, int(batch.shape[0]), self.batch_size):
                chunk = batch[start : start + self.batch_size]
                images = chunk.to(device) if is_float else preprocess(chunk, device)
                out = self.landmarks(images)
                landmarks.append(out.landmarks.float().cpu())
                scores.append(out.scores.float().cpu())
        if not landmarks:
            num = self.num_landmarks
            return CropPrediction(torch.zeros(0, num, 2), torch.zeros(0, num))
        return CropPrediction(torch.cat(landmarks), torch.cat(scores))

    def __call__(
        self,
        image: str | Path | np.ndarray | Any,
        boxes_xyxy: Any,
        *,
        color: Literal["bgr", "rgb"] = "bgr",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> FacePrediction:
        """Landmarks of the faces in ``boxes_xyxy`` (N, 4) ``(x0, y0, x1, y1)`` image pixels (crop boxes).

        ``image``: a file path, a PIL image or a numpy array (BGR unless ``color="rgb"``), read by
        `load_image` (an image of more than ``max_pixels`` pixels is refused; 0 or None: no limit). Boxes
        from a face detector are turned into crop boxes with the detector's rule first (`pipnet_lit.detect`).
        """
        bgr = load_image(image, color, max_pixels=max_pixels)
        crops, frames = crop_faces(bgr, boxes_xyxy, self.input_size)
        pred = self.crops(crops)
        norm = pred.landmarks.numpy()
        pixels = uncrop(norm.astype(np.float64), frames)
        return FacePrediction(pixels, pred.scores.numpy(), frames, norm)
