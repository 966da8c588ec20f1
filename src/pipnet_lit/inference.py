"""Inference without Lightning: network + mean-face neighbour tables + preprocessing, in one `Predictor`.

`Predictor` turns face crops into landmarks. Everything that runs a trained PIPNet (the LightningModule's
evaluation, `pipnet_lit.eval`, the `pipnet_lit.predict` CLI, export) goes through it, so the ImageNet
constants, the crop -> tensor preprocessing and the crop/uncrop live here (crop/uncrop arithmetic itself in
`pipnet_lit.datasets.geometry`).

Build one from our checkpoint or from the official code's weights::

    predictor = Predictor.from_checkpoint("model.ckpt", device="cuda")
    predictor = Predictor.from_official("epoch59.pth", "meanface.txt", backbone="resnet18",
                                        num_landmarks=68, num_nb=10, net_stride=32, input_size=256)
    faces = predictor("photo.jpg", boxes=[[x0, y0, x1, y1]])   # faces.landmarks (N, L, 2) image pixels
    crops = predictor.crops(batch)                              # ready (B, S, S, 3) BGR crops

Coordinates. Landmarks come back in the convention of the training annotations (300W: the ``.pts``
numbers as they are), in source-image pixels for `predictor(image, boxes)` and as fractions of the crop
(0 = left/top edge, 1 = right/bottom edge) for `predictor.crops`. A box is ``(x0, y0, x1, y1)``
in pixels (x1, y1 exclusive edges); it is clamped to the image (``[0, W] x [0, H]``) and truncated to
integers, so the pixels the network sees are exactly the frame the landmarks are mapped back with.

Scores. Each landmark's score is the maximum of its score map (the raw head output, trained towards 1 at
the landmark's cell and 0 elsewhere): a confidence, not a calibrated probability.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from pipnet_lit.datasets.geometry import CropBox, crop_and_resize, denormalize_points
from pipnet_lit.models import BACKBONES, PIPNet
from pipnet_lit.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from pipnet_lit.pip import Neighbors, PIPOutputs, build_neighbors, decode_details

__all__ = [
    "CHECKPOINT_FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CropPrediction",
    "FacePrediction",
    "ImageReadError",
    "Predictor",
    "crop_faces",
    "describe_official_weights",
    "load_official_weights",
    "load_image",
    "preprocess",
    "read_official_meanface",
    "uncrop",
]

#: Version tag written by `Predictor.save` next to the Lightning keys (``pipnet_lit`` entry).
CHECKPOINT_FORMAT = 1
# The hyperparameters a checkpoint must carry to rebuild the network.
_NET_HPARAMS = ("backbone", "num_landmarks", "num_nb", "net_stride", "input_size")


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


def crop_faces(image_bgr: np.ndarray, boxes: Any, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each box out of the image and resize it to the network input.

    Each ``(x0, y0, x1, y1)`` is clamped to the image, ``[0, W] x [0, H]`` (x1, y1 are exclusive edges, so a
    box of the whole image keeps every pixel; the official dataset crops clamp to ``W - 1``, see
    `geometry.clamp_box`), truncated with ``int()`` and cropped as ``image[y0:y1, x0:x1]`` resized with
    ``cv2.resize`` (`geometry.crop_and_resize`). Returns the crops (N, S, S, 3) uint8 BGR and the integer
    crop boxes (N, 4) float64 ``(x0, y0, x1, y1)`` that `uncrop` maps landmarks back with.
    """
    arr = _as_boxes(boxes)
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


def uncrop(landmarks: np.ndarray | Tensor, boxes: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """(..., L, 2) crop fractions -> source-image pixels, for boxes (..., 4) ``(x0, y0, x1, y1)``.

    ``x = x0 + u * (x1 - x0)``, ``y = y0 + v * (y1 - y0)`` (`geometry.denormalize_points`), numpy or torch.
    """
    frames = boxes[..., :4].clone() if isinstance(boxes, Tensor) else np.array(boxes[..., :4], dtype=float)
    frames[..., 2:4] = boxes[..., 2:4] - boxes[..., 0:2]
    return denormalize_points(landmarks, frames)


def load_image(image: str | Path | np.ndarray | Any, color: Literal["bgr", "rgb"] = "bgr") -> np.ndarray:
    """An image file path, PIL image or numpy array -> (H, W, 3) uint8 BGR (a new array for paths / PIL).

    numpy arrays are taken as BGR (OpenCV's order) unless ``color="rgb"``; (H, W) grayscale and
    (H, W, 4) arrays with alpha are converted. Raises `ImageReadError` naming the file when it cannot be
    decoded.
    """
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageReadError(f"cannot read image {path}: no such file")
        data = np.fromfile(str(path), dtype=np.uint8)  # not cv2.imread: non-ASCII paths work everywhere
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if decoded is None:
            raise ImageReadError(
                f"cannot read image {path}: OpenCV cannot decode it (not an image, truncated, or an "
                "unsupported format)"
            )
        return decoded
    if type(image).__module__.startswith("PIL."):
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise ImageReadError(
            f"image must be a file path, a PIL image or a numpy array, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ImageReadError(f"image arrays must be uint8 (0..255), got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ImageReadError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[..., ::-1]) if color == "rgb" else image


# -- results -------------------------------------------------------------------------------------------


@dataclass
class CropPrediction:
    """Landmarks of a batch of crops: ``landmarks`` (B, L, 2) crop fractions, ``scores`` (B, L)."""

    landmarks: Tensor
    scores: Tensor


@dataclass
class FacePrediction:
    """Landmarks of the faces of one image (numpy, CPU).

    landmarks: (N, L, 2) float64 source-image pixels; scores: (N, L) float32 per-landmark score;
    boxes: (N, 4) float64 integer crop boxes ``(x0, y0, x1, y1)`` actually cropped (after clamping);
    crop_landmarks: (N, L, 2) float32 the same landmarks as fractions of each crop.
    """

    landmarks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    crop_landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])


# -- the predictor -------------------------------------------------------------------------------------


class Predictor:
    """A PIPNet with its mean face: crops -> landmarks (B, L, 2) and per-landmark scores.

    Args:
        net: the network (a `PIPNet`, or any module mapping (B, 3, S, S) ImageNet-normalized RGB to
            `PIPOutputs`). Its mode is left as it is (`from_checkpoint` / `from_official` return it in eval
            mode); `to(device)` moves it.
        meanface: (L, 2) mean face in crop fractions; with ``num_nb`` it fixes the neighbour tables.
        num_nb: neighbours per landmark of the head.
        input_size: side S of the square input crop.
        merge: average each landmark's own estimate with its neighbours' votes (the paper's inference).
        batch_size: faces per forward pass in `crops` / `__call__`.
    """

    def __init__(
        self,
        net: nn.Module,
        meanface: np.ndarray | Tensor,
        *,
        num_nb: int,
        input_size: int,
        merge: bool = True,
        batch_size: int = 32,
    ) -> None:
        mf = torch.as_tensor(np.asarray(meanface), dtype=torch.float64).cpu().clone()
        if mf.ndim != 2 or mf.shape[1] != 2:
            raise ValueError(f"meanface must have shape (L, 2), got {tuple(mf.shape)}")
        if isinstance(net, PIPNet) and (net.num_landmarks, net.num_nb) != (mf.shape[0], num_nb):
            raise ValueError(
                f"the network predicts {net.num_landmarks} landmarks with num_nb={net.num_nb}, but the mean "
                f"face has {mf.shape[0]} landmarks and num_nb={num_nb} was given"
            )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.net = net
        self.meanface = mf
        self.num_nb = int(num_nb)
        self.input_size = int(input_size)
        self.merge = bool(merge)
        self.batch_size = int(batch_size)
        self._neighbors: dict[torch.device, Neighbors] = {
            torch.device("cpu"): build_neighbors(mf, self.num_nb)
        }

    # -- construction ------------------------------------------------------------------------------
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
        """Load a pipnet-lit checkpoint (training's ``*.ckpt`` or `Predictor.save` / `pipnet_lit.convert`).

        Reads it with ``torch.load(weights_only=True)``: the network settings from ``hyper_parameters``, the
        weights from the ``net.*`` entries of ``state_dict`` and the mean face from its ``_extra_state``. No
        Lightning, no ImageNet weights. ``num_landmarks``, when given, must equal the checkpoint's (a clear
        error otherwise); ``merge`` None keeps the checkpoint's setting.
        """
        path = Path(path)
        ckpt = _torch_load(path, "checkpoint")
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
            hint = (
                " It looks like a bare state dict, e.g. the official code's epoch59.pth: use "
                "Predictor.from_official(...) or `python -m pipnet_lit.convert official=... meanface=... "
                "data=... out=model.ckpt`."
                if isinstance(ckpt, dict) and any(k.endswith("cls_layer.weight") for k in ckpt)
                else ""
            )
            raise ValueError(
                f"{path} is not a pipnet-lit checkpoint (it needs 'state_dict' and 'hyper_parameters')."
                + hint
            )
        hp = dict(ckpt["hyper_parameters"])
        missing = [k for k in _NET_HPARAMS if k not in hp]
        if missing:
            raise ValueError(f"{path}: hyper_parameters lack {missing}; is it a PIPNetModule checkpoint?")
        state = ckpt["state_dict"]
        extra = state.get("_extra_state")
        meanface = extra.get("meanface") if isinstance(extra, dict) else None
        if meanface is None:
            raise ValueError(
                f"{path} holds no mean face (state_dict['_extra_state']['meanface']): it was saved before "
                "training started; use a checkpoint written during or after training"
            )
        num = int(hp["num_landmarks"])
        if num_landmarks is not None and int(num_landmarks) != num:
            raise ValueError(
                f"{path} predicts {num} landmarks, but {int(num_landmarks)} are expected here: use a "
                f"checkpoint trained on a {int(num_landmarks)}-point dataset (or a matching landmark scheme)"
            )
        net = PIPNet(
            backbone=str(hp["backbone"]),
            num_landmarks=num,
            num_nb=int(hp["num_nb"]),
            net_stride=int(hp["net_stride"]),
            input_size=int(hp["input_size"]),
            coarse_levels=int(hp.get("coarse_levels", 0) or 0),
            pretrained=False,
        )
        weights = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        _load_strict(net, weights, str(path))
        predictor = cls(
            net.eval(),
            meanface,
            num_nb=int(hp["num_nb"]),
            input_size=int(hp["input_size"]),
            merge=bool(hp.get("merge", True)) if merge is None else merge,
            batch_size=batch_size,
        )
        return predictor.to(device)

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
        """Load weights saved by the official code (``torch.save(net.state_dict(), 'epoch59.pth')``).

        ``weights``: the file (read with ``torch.load(weights_only=True)``) or its state dict; ``meanface``:
        the official ``meanface.txt`` (one line of 2L numbers x1 y1 x2 y2 ...) or an (L, 2) array. The
        settings are those of the official experiment file (``pip_32_16_60_r18_l2_l1_10_1_nb10.py``:
        resnet18, stride 32, num_nb 10, input 256). Settings that contradict the weights (backbone, landmark
        count, num_nb, stride) or a mean face of another length raise a ValueError naming each difference
        (``name`` names a state dict passed in memory in those messages).
        """
        source = str(weights) if isinstance(weights, (str, Path)) else (name or "the official state dict")
        state = (
            load_official_weights(weights)
            if isinstance(weights, (str, Path))
            else _check_state(weights, source)
        )
        given = {
            "backbone": backbone,
            "num_landmarks": int(num_landmarks),
            "num_nb": int(num_nb),
            "net_stride": int(net_stride),
        }
        found = describe_official_weights(state)
        diffs = [
            f"{key}={given[key]!r} but the weights are {key}={found[key]!r}"
            for key in given
            if found.get(key) is not None and found[key] != given[key]
        ]
        if diffs:
            raise ValueError(f"{source} does not match the settings: " + "; ".join(diffs))
        mf = read_official_meanface(meanface) if isinstance(meanface, (str, Path)) else np.asarray(meanface)
        if mf.ndim != 2 or mf.shape != (int(num_landmarks), 2):
            where = meanface if isinstance(meanface, (str, Path)) else "the mean face"
            raise ValueError(
                f"{where} has {mf.shape[0] if mf.ndim == 2 else mf.size} points but num_landmarks="
                f"{int(num_landmarks)}: use the meanface.txt of the dataset the weights were trained on"
            )
        net = PIPNet(
            backbone=backbone,
            num_landmarks=int(num_landmarks),
            num_nb=int(num_nb),
            net_stride=int(net_stride),
            input_size=int(input_size),
            pretrained=False,
        )
        _load_strict(net, state, source)
        predictor = cls(
            net.eval(), mf, num_nb=int(num_nb), input_size=int(input_size), merge=merge, batch_size=batch_size
        )
        return predictor.to(device)

    def save(self, path: str | Path, *, dataset: str | None = None, **provenance: Any) -> Path:
        """Write a checkpoint that `from_checkpoint`, `pipnet_lit.eval` and the LightningModule load.

        The Lightning layout: ``state_dict`` (``net.*`` + ``_extra_state`` with the float64 mean face),
        ``hyper_parameters`` (the network settings, ``pretrained=False``) and ``pytorch-lightning_version``;
        plus ``pipnet_lit`` (format version, ``dataset`` and any ``provenance`` strings). Needs a `PIPNet`.
        """
        if not isinstance(self.net, PIPNet):
            raise TypeError(f"save needs a PIPNet, this predictor wraps a {type(self.net).__name__}")
        net = self.net
        state: dict[str, Any] = {f"net.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}
        state["_extra_state"] = {"meanface": self.meanface.clone()}
        hparams = {
            "backbone": net.backbone_name,
            "num_landmarks": net.num_landmarks,
            "num_nb": net.num_nb,
            "net_stride": net.net_stride,
            "input_size": self.input_size,
            "pretrained": False,
            "coarse_levels": net.coarse_levels,
            "merge": self.merge,
        }
        try:
            version = importlib.metadata.version("lightning")
        except importlib.metadata.PackageNotFoundError:
            version = "2.0.0"
        info = {"format": CHECKPOINT_FORMAT, "dataset": dataset, **{k: str(v) for k, v in provenance.items()}}
        ckpt = {
            "state_dict": state,
            "hyper_parameters": hparams,
            "pytorch-lightning_version": version,
            "epoch": 0,
            "global_step": 0,
            "pipnet_lit": info,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, path)
        return path

    # -- device and tables -------------------------------------------------------------------------
    @property
    def num_landmarks(self) -> int:
        return int(self.meanface.shape[0])

    @property
    def device(self) -> torch.device:
        """The device of the network's first parameter or buffer (CPU for a network without any)."""
        for tensor in (*self.net.parameters(), *self.net.buffers()):
            return tensor.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Predictor:
        """Move the network (in place) to ``device``; returns self."""
        self.net.to(device)
        return self

    def neighbors(self, device: torch.device | str | None = None) -> Neighbors:
        """The neighbour tables (built once from the mean face) on ``device`` (default: the network's)."""
        dev = torch.device(device) if device is not None else self.device
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev not in self._neighbors:
            self._neighbors[dev] = self._neighbors[torch.device("cpu")].to(dev)
        return self._neighbors[dev]

    # -- prediction --------------------------------------------------------------------------------
    def decode(self, outputs: PIPOutputs) -> CropPrediction:
        """Head outputs -> landmarks (B, L, 2) in crop fractions and scores (B, L), on the outputs' device."""
        details = decode_details(outputs, self.neighbors(outputs[0].device))
        return CropPrediction(details.merged if self.merge else details.own, details.max_score)

    def landmarks(self, images: Tensor) -> CropPrediction:
        """Forward + decode of preprocessed images (B, 3, S, S) on the network's device.

        Changes neither the network's mode nor the autograd state (the LightningModule calls this inside its
        own loops); `crops` and `__call__` are the inference entry points.
        """
        return self.decode(self.net(images))

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
        self, image: str | Path | np.ndarray | Any, boxes: Any, *, color: Literal["bgr", "rgb"] = "bgr"
    ) -> FacePrediction:
        """Landmarks of the faces in ``boxes`` (N, 4) ``(x0, y0, x1, y1)`` image pixels (the crop boxes).

        ``image``: a file path, a PIL image or a numpy array (BGR unless ``color="rgb"``). Boxes from a face
        detector are turned into crop boxes with the detector's rule first (`pipnet_lit.detect`).
        """
        bgr = load_image(image, color)
        crops, frames = crop_faces(bgr, boxes, self.input_size)
        pred = self.crops(crops)
        norm = pred.landmarks.numpy()
        pixels = uncrop(norm.astype(np.float64), frames)
        return FacePrediction(pixels, pred.scores.numpy(), frames, norm)


# -- official weights ----------------------------------------------------------------------------------


def read_official_meanface(path: str | Path) -> np.ndarray:
    """The official ``meanface.txt``: first line, 2L numbers ``x1 y1 x2 y2 ...`` -> (L, 2) float64."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"mean face file {path} does not exist (the official data/<dataset>/meanface.txt)"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        values = [float(v) for v in lines[0].split()] if lines else []
    except ValueError as err:
        raise ValueError(f"{path}:1: the mean face must be numbers separated by spaces ({err})") from None
    if not values or len(values) % 2:
        raise ValueError(f"{path}:1: expected 2L numbers x1 y1 x2 y2 ..., got {len(values)}")
    mf = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(mf).all():
        raise ValueError(f"{path}:1: the mean face holds NaN or inf")
    return mf


def load_official_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict of an official ``epoch*.pth`` (``torch.load(weights_only=True)``, ``module.`` prefixes
    of ``nn.DataParallel`` removed); clear errors for a missing file, a non-torch file or our checkpoint."""
    path = Path(path)
    return _check_state(_torch_load(path, "official weights"), str(path))


def _check_state(state: Any, source: str) -> dict[str, Tensor]:
    if isinstance(state, dict) and "state_dict" in state and "hyper_parameters" in state:
        raise ValueError(f"{source} is a pipnet-lit checkpoint, not official weights: use from_checkpoint")
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{source} is not a state dict of tensors (the official epoch*.pth files are)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def describe_official_weights(state: dict[str, Tensor]) -> dict[str, Any]:
    """What an official state dict was built with: backbone, num_landmarks, num_nb, net_stride.

    Read from the key names and head shapes (the official class names equal ours); a value that cannot be
    told is None. ResNets: bottleneck blocks (``layer1.0.conv3``) and the block count of ``layer3`` (6:
    resnet50, 23: resnet101); MobileNets: the head's input channels (1280: v2, 960: v3).
    """
    out: dict[str, Any] = dict.fromkeys(("backbone", "num_landmarks", "num_nb", "net_stride"))
    cls_w, nb_w = state.get("cls_layer.weight"), state.get("nb_x_layer.weight")
    if cls_w is not None:
        out["num_landmarks"] = int(cls_w.shape[0])
        if nb_w is not None and nb_w.shape[0] % cls_w.shape[0] == 0:
            out["num_nb"] = int(nb_w.shape[0] // cls_w.shape[0])
    if "deconv1.weight" in state:
        out["net_stride"] = 16
    elif "layer6.weight" in state:
        out["net_stride"] = 128
    elif "layer5.weight" in state:
        out["net_stride"] = 64
    elif cls_w is not None:
        out["net_stride"] = 32
    if any(k.startswith("features.") for k in state):
        by_channels = {BACKBONES[name].channels: name for name in ("mobilenet_v2", "mobilenet_v3")}
        out["backbone"] = by_channels.get(int(cls_w.shape[1])) if cls_w is not None else None
    elif "conv1.weight" in state:
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
        if "layer1.0.conv3.weight" not in state:
            out["backbone"] = "resnet18" if len(blocks) == 2 else None
        else:
            out["backbone"] = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    return out


def _torch_load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zips, non-torch files
        raise ValueError(
            f"cannot read {what} {path} with torch.load(weights_only=True) ({type(err).__name__}: {err}); "
            "is it a PyTorch file?"
        ) from err


def _load_strict(net: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a message listing what is missing, extra or mis-shaped."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        parts = []
        for name, items in (("missing", missing), ("unexpected", extra), ("shape (file vs model)", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{name}: {items[:5]}{more}")
        raise ValueError(f"{source} does not fit the network: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)
