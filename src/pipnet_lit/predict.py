"""Landmarks on photos, folders, videos and webcams: ``python -m pipnet_lit.predict ckpt=... input=...``.

    python -m pipnet_lit.predict ckpt=model.ckpt input=photo.jpg                 # -> predictions/photo.jpg
    python -m pipnet_lit.predict ckpt=model.ckpt input=photos/ output=out/ detector=mtcnn
    python -m pipnet_lit.predict ckpt=model.ckpt input=clip.mp4 smooth=true     # -> predictions/clip.mp4
    python -m pipnet_lit.predict ckpt=model.ckpt input=0 max_frames=300         # webcam 0
    python -m pipnet_lit.predict ckpt=model.ckpt input=crops/ detector=whole    # images that are face crops
    python -m pipnet_lit.predict ckpt=model.ckpt model=model_int8.xml precision=int8 input=clip.mp4

Writes the annotated image(s) or video into ``output`` (default ``predictions/``; folders keep their
sub-folders, a video becomes ``<output>/<stem>.mp4``) and ``<output>/predictions.json``: every face of every
image / frame with its box and score, the crop box, the landmarks in image pixels and each landmark's score
(plus ``landmarks_raw`` when smoothing), and a ``timing`` entry (seconds per stage, items per second). Faces
are batched across images and frames (``batch_size``). Options (``key=value``, nested with dots):

  ckpt            a pipnet-lit checkpoint (training's *.ckpt, or `python -m pipnet_lit.convert` output); with
                  model= it still gives the settings the exported file is checked against
  model           an exported model to run instead of the checkpoint's network: .pt (torchscript), .onnx
                  (onnxruntime) or .xml (openvino), from `python -m pipnet_lit.export ckpt=... format=...`
  backend         eager (default without model=), torchscript, onnxruntime or openvino (default with model=:
                  the one its suffix names)
  precision       fp32 (default), bf16 (eager, openvino; on CPUs with bf16 instructions) or int8 (an int8
                  export: onnxruntime, openvino); threads: the backend's intra-op threads (eager and
                  torchscript: torch.set_num_threads, for the whole process)
  spinning        onnxruntime: whether its idle threads busy-wait for the next call (default false: between
                  two landmark calls predict detects, draws and encodes, and spinning threads take the cores
                  from that work: 29 -> 38-43 frames/s end to end on a video, README "Predict"); true or null
                  (the runtime's default, on) for a loop that only runs the model
  input           an image, a folder of images (recursive), a video file, or a webcam index (0, 1, ...)
  output          output folder (must not be the input folder)
  detector        haar (default, offline), mtcnn (pip install --no-deps facenet-pytorch), whole, or a
                  class path pkg.module:Class; detector_args.<name>=... are its arguments, e.g.
                  detector_args.angles=[-20,-10,0,10,20] (tilted faces, Haar) or detector_args.min_score=0.95
  crop            override the detector's box -> crop rule: crop.scale_x=1.2 crop.scale_y=1.0 crop.shift_y=0.1
  detect_every    video / webcam: run the detector every N frames (default 5; 1 with detector=whole) and in
                  between carry each face's crop box from its landmarks in the previous frame (the training
                  crop's rule: the landmarks' box x tracking.scale, 1.1 as 300W). A tracked face whose mean
                  landmark score falls below tracking.min_score, or with fewer than tracking.min_inside of its
                  landmarks in the frame, is lost: the detector runs on that frame at once. 1: detect every
                  frame. Images always run the detector. Each frame records ``boxes_from`` (detector or
                  tracking)
  scheme          a landmark scheme (ibug68, wflw98, ... or a YAML path): draws its groups as lines and checks
                  that the checkpoint predicts as many landmarks
  smooth          true: One Euro filter on video landmarks per face track (smoothing.min_cutoff, .beta,
                  .d_cutoff, .min_iou); off by default
  max_pixels      refuse images (and videos whose frames are) larger than this many pixels, read from the
                  file's header before decoding (default 100000000; 0 or null: no limit)
  max_failed_frames  stop a video or webcam after this many frames in a row fail to decode (default 10)
  batch_size, device (auto | cpu | cuda), max_frames, fps (for inputs that do not report one), progress
  (also prints items per second per stage), save_images (false: JSON only), draw.points / draw.lines /
  draw.boxes / draw.radius / draw.color

Bad input: an unreadable or too large single image, an image without a face, a video or webcam that cannot be
opened or has frames over max_pixels, a checkpoint that is not one or does not fit the scheme, and an exported
model that does not fit the checkpoint, the backend or the precision stop with a message (exit code 1); in a
folder, unreadable images, images over max_pixels and images without a face are skipped and counted. In a
video, frames without a face are counted, and frames that fail to decode are skipped and counted (a failed
read before the frame count the video reports is a damaged frame; after it, the end of the video);
``max_failed_frames`` failures in a row stop the video with a note. The JSON file is written atomically: a
killed run leaves the previous file or the new one, never half of one.

Start-up: this module imports only the standard library, numpy and the options parser; PyTorch, OpenCV and
the runtimes are imported when a run starts, so ``--help`` and option errors answer at once.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipnet_lit.cli import Command, HelpRequested, UsageError, option
from pipnet_lit.files import atomic_write_text

if TYPE_CHECKING:
    import cv2

    from pipnet_lit.detect import FaceDetector
    from pipnet_lit.runtime import Runtime

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "DrawConfig",
    "LandmarkModel",
    "PredictConfig",
    "PredictError",
    "PredictSummary",
    "SmoothingConfig",
    "TrackingConfig",
    "draw_faces",
    "load_landmark_model",
    "main",
    "parse_config",
    "predict",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".jp2")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
JSON_NAME = "predictions.json"

#: `pipnet_lit.inference.DEFAULT_MAX_PIXELS`, spelled out: importing that module imports PyTorch, which
#: ``--help`` must not wait for (tests/test_predict_backends.py keeps the two equal).
_DEFAULT_MAX_PIXELS = 100_000_000

#: The names of `pipnet_lit.runtime.BACKENDS` and of the precisions in `pipnet_lit.runtime.PRECISIONS`, as
#: option types so that a misspelt name is an option error (the same test keeps them equal).
Backend = Literal["eager", "torchscript", "onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]

#: Frames between detections on a video or webcam when ``detect_every`` is not given (detector=whole: 1).
DEFAULT_DETECT_EVERY = 5


class PredictError(RuntimeError):
    """A bad input the CLI reports as a message (exit code 1) rather than a traceback."""


@dataclass
class SmoothingConfig:
    """One Euro filter settings (see `pipnet_lit.smoothing`); speed is in face sizes per second."""

    min_cutoff: float = option(1.0, help="One Euro filter: minimum cutoff frequency (Hz)")
    beta: float = option(5.0, help="One Euro filter: speed coefficient")
    d_cutoff: float = option(1.0, help="One Euro filter: cutoff of the speed estimate (Hz)")
    min_iou: float = option(0.3, help="a face in the next frame continues a track at this box IoU")


@dataclass
class TrackingConfig:
    """How a video face's crop box is carried between detections (``detect_every`` > 1)."""

    scale: float = option(
        1.1, help="tracked crop box = the landmarks' box x this (the training crops' rule: 300W 1.1)"
    )
    min_score: float = option(0.3, help="a tracked face with a lower mean landmark score is lost: re-detect")
    min_inside: float = option(
        0.5, help="a tracked face with a smaller fraction of its landmarks in the frame is lost: re-detect"
    )


@dataclass
class DrawConfig:
    """What the annotated images show; colours are BGR."""

    points: bool = option(True, help="draw the landmarks")
    lines: bool = option(True, help="draw the scheme's groups as polylines (needs scheme=)")
    boxes: bool = option(True, help="draw the crop box of each face")
    radius: int = option(0, help="point radius in pixels (0: from the face size)")
    color: list[int] = option([0, 255, 0], help="landmark colour, B,G,R")
    box_color: list[int] = option([0, 0, 255], help="box colour, B,G,R")


@dataclass
class PredictConfig:
    """Options of ``python -m pipnet_lit.predict`` (see the module docstring)."""

    ckpt: str = option(help="a pipnet-lit checkpoint (training's *.ckpt, or pipnet_lit.convert's output)")
    input: str = option(help="an image, a folder of images, a video file, or a webcam index (0, 1, ...)")
    output: str = option("predictions", help="output folder (not the input folder)")
    model: str | None = option(
        None, help="an exported model (.pt / .onnx / .xml from pipnet_lit.export) to run instead of ckpt's"
    )
    backend: Backend | None = option(
        None,
        metavar="NAME",
        help="eager, torchscript, onnxruntime or openvino (null: eager, or model='s by its suffix)",
    )
    precision: Precision = option("fp32", help="fp32, bf16 (eager, openvino) or int8 (an int8 export)")
    threads: int | None = option(
        None, help="intra-op threads of the backend (eager / torchscript: torch's) (null: its default)"
    )
    spinning: bool | None = option(
        False,
        help="onnxruntime: let its idle threads busy-wait between calls (default false: they would take the "
        "cores from the detector, drawing and encoding; null: the runtime's own default, on)",
    )
    detector: str = option("haar", help="haar, mtcnn, whole, or a class path pkg.module:Class")
    detector_args: dict[str, Any] = option(
        {}, help="the detector's arguments, e.g. detector_args.angles=[-20,0,20]"
    )
    crop: dict[str, float] | None = option(None, help="the detector box -> crop rule, e.g. crop.scale_x=1.2")
    detect_every: int | None = option(
        None, help="video: detect every N frames, track faces between (null: 5; 1 with detector=whole)"
    )
    tracking: TrackingConfig = option(default_factory=TrackingConfig, help="tracking settings")
    scheme: str | None = option(None, help="landmark scheme (ibug68, wflw98, ... or a YAML path) to draw")
    batch_size: int = option(32, help="faces per forward pass")
    device: str = option("auto", help="auto, cpu or cuda")
    smooth: bool = option(False, help="One Euro filter on video landmarks per face track")
    smoothing: SmoothingConfig = option(default_factory=SmoothingConfig, help="smoothing settings")
    draw: DrawConfig = option(default_factory=DrawConfig, help="drawing settings")
    save_images: bool = option(True, help="write annotated images / video (false: JSON only)")
    max_frames: int | None = option(None, help="stop a video or webcam after this many frames")
    max_pixels: int | None = option(
        _DEFAULT_MAX_PIXELS,
        help="refuse images / video frames of more pixels than this (0 or null: no limit)",
    )
    max_failed_frames: int = option(10, help="stop a video or webcam after this many failed reads in a row")
    fps: float | None = option(None, help="frame rate for inputs that do not report one")
    progress: bool = option(True, help="show a progress bar and the items per second of each stage")


COMMAND = Command(PredictConfig, prog="python -m pipnet_lit.predict", doc=__doc__, style="key=value")


@dataclass
class PredictSummary:
    """What a run did: the JSON file, the annotated files, the counts of faces and skipped inputs, where the
    video boxes came from (``boxes``: detector / tracking frames, lost tracks) and the ``timing`` entry."""

    kind: str
    json_path: Path
    written: list[Path] = field(default_factory=list)
    processed: int = 0
    faces: int = 0
    unreadable: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    max_pixels: int | None = None
    stopped: str | None = None
    boxes: dict[str, int] | None = None
    timing: dict[str, Any] | None = None
    show_timing: bool = False

    def message(self) -> str:
        unit = "frames" if self.kind in ("video", "webcam") else "images"
        what = "frame(s)" if unit == "frames" else "image(s)"
        text = f"{self.faces} faces in {self.processed} {unit}; wrote {self.json_path}"
        if self.written:
            text += f" and {len(self.written)} annotated file(s) in {self.json_path.parent}"
        if self.unreadable:
            text += f"\nskipped {len(self.unreadable)} unreadable {what}: {_shown(self.unreadable)}"
        if self.too_large:
            text += (
                f"\nskipped {len(self.too_large)} image(s) of more than max_pixels={self.max_pixels} pixels: "
                f"{_shown(self.too_large)}"
            )
        if self.no_face:
            text += f"\nno face found in {len(self.no_face)} {what}: {_shown(self.no_face)}"
        if self.stopped:
            text += f"\n{self.stopped}"
        if self.boxes and self.boxes["tracking"]:
            text += (
                f"\nboxes: detector on {self.boxes['detector']} frame(s), tracked on "
                f"{self.boxes['tracking']} ({self.boxes['lost']} lost track(s) re-detected)"
            )
        if self.show_timing and self.timing:
            rates = ", ".join(f"{k} {v:.1f}" for k, v in self.timing["per_second"].items())
            text += (
                f"\n{self.timing['unit']}/s per stage: {rates}; end to end "
                f"{self.timing['end_to_end_per_second']:.1f}"
            )
        return text


def _shown(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


# -- config ----------------------------------------------------------------------------------------------


def parse_config(argv: Sequence[str]) -> PredictConfig:
    """``key=value`` arguments (nested with dots) over the defaults, type-checked (`pipnet_lit.cli`);
    `pipnet_lit.cli.UsageError` names a bad key or value."""
    return COMMAND.parse(argv)


def _check_numbers(cfg: PredictConfig) -> None:
    """Ranges the option types cannot say; ValueError naming the option."""
    if cfg.max_pixels is not None and cfg.max_pixels < 0:
        raise ValueError(f"max_pixels must be >= 0 (0 or null: no limit), got {cfg.max_pixels}")
    if cfg.max_failed_frames < 1:
        raise ValueError(f"max_failed_frames must be >= 1, got {cfg.max_failed_frames}")
    if cfg.detect_every is not None and cfg.detect_every < 1:
        raise ValueError(f"detect_every must be >= 1 (1: detect every frame), got {cfg.detect_every}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1 (null: every core), got {cfg.threads}")
    if not cfg.tracking.scale > 0:
        raise ValueError(f"tracking.scale must be > 0, got {cfg.tracking.scale}")
    if not 0 <= cfg.tracking.min_inside <= 1:
        raise ValueError(f"tracking.min_inside must be within [0, 1], got {cfg.tracking.min_inside}")


# -- drawing ---------------------------------------------------------------------------------------------


def draw_faces(
    image: np.ndarray,
    faces: list[dict[str, Any]],
    draw: DrawConfig,
    groups: dict[str, tuple[int, int]] | None,
) -> np.ndarray:
    """A copy of the BGR image with each face's crop box, landmark points and group polylines."""
    import cv2

    out = image.copy()
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    one = 1 << shift
    for face in faces:
        x0, y0, x1, y1 = face["crop_box"]
        size = max(1.0, float(np.sqrt(max((x1 - x0) * (y1 - y0), 1.0))))
        radius = draw.radius or max(1, round(size / 90))
        thickness = max(1, round(size / 150))
        if draw.boxes:
            cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), tuple(draw.box_color), thickness)
        pts = np.asarray(face["landmarks"], dtype=np.float64)
        fixed = np.round(pts * one).astype(np.int32)
        if draw.lines and groups:
            for start, end in groups.values():
                if end < len(fixed) and end > start:
                    cv2.polylines(
                        out, [fixed[start : end + 1]], False, tuple(draw.color), 1, cv2.LINE_AA, shift
                    )
        if draw.points:
            for p in fixed:
                cv2.circle(
                    out, (int(p[0]), int(p[1])), radius * one, tuple(draw.color), -1, cv2.LINE_AA, shift
                )
    return out


# -- the network, whatever runs it -----------------------------------------------------------------------


@dataclass(frozen=True)
class LandmarkModel:
    """What the image and frame loops need of the network, whatever backend runs it.

    ``crops((N, S, S, 3) uint8 BGR) -> (landmarks (N, L, 2) float64 crop fractions, scores (N, L))``: the
    crops are normalized by `pipnet_lit.inference.preprocess` (the eager path's own) for every backend.
    ``info``: backend, precision and exported file, for the JSON header.
    """

    input_size: int
    num_landmarks: int
    crops: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    info: dict[str, Any]


def _backend_and_file(cfg: PredictConfig) -> tuple[str, Path | None]:
    """The backend to run and the exported file (None: the checkpoint's network); PredictError when the
    two options do not fit together."""
    from pipnet_lit.runtime import BACKEND_BY_SUFFIX

    if cfg.model is None:
        if cfg.backend in (None, "eager"):
            return "eager", None
        suffix = next(s for s, b in BACKEND_BY_SUFFIX.items() if b == cfg.backend)
        fmt = "onnx" if cfg.backend == "onnxruntime" else cfg.backend
        raise PredictError(
            f"backend={cfg.backend} runs an exported model: add model=<file>{suffix} (make one with "
            f"`python -m pipnet_lit.export ckpt={cfg.ckpt} format={fmt}`), or use backend=eager"
        )
    path = Path(cfg.model)
    by_suffix = BACKEND_BY_SUFFIX.get(path.suffix.lower())
    exported = {s: b for s, b in BACKEND_BY_SUFFIX.items() if b != "eager"}
    if by_suffix == "eager":
        raise PredictError(
            f"model={cfg.model} is a checkpoint: pass it as ckpt= (model= is an exported file)"
        )
    if by_suffix is None:
        known = ", ".join(f"{s} ({b})" for s, b in exported.items())
        raise PredictError(
            f"model={cfg.model}: cannot tell its backend from the suffix; exported files: {known}"
        )
    if cfg.backend == "eager":
        raise PredictError(
            f"model={cfg.model} is an exported {by_suffix} model, but backend=eager runs the checkpoint's "
            f"network: pass backend={by_suffix} (or leave backend out), or drop model="
        )
    if cfg.backend is not None and cfg.backend != by_suffix:
        suffixes = "/".join(s for s, b in exported.items() if b == cfg.backend)
        raise PredictError(
            f"model={cfg.model} is a {by_suffix} model (suffix {path.suffix}), not one for backend="
            f"{cfg.backend}: pass backend={by_suffix}, or a {suffixes} file for backend={cfg.backend}"
        )
    if not path.is_file():
        raise PredictError(f"model={cfg.model} does not exist (an exported {by_suffix} model)")
    return by_suffix, path


def _check_precision(cfg: PredictConfig, backend: str, device: str) -> None:
    from pipnet_lit.runtime import PRECISIONS, supports_bf16

    if cfg.precision not in PRECISIONS[backend]:
        hint = " (int8 runs an int8 export: onnxruntime or openvino)" if cfg.precision == "int8" else ""
        raise PredictError(
            f"precision={cfg.precision} is not available with backend={backend}: choose "
            f"{' or '.join(PRECISIONS[backend])}{hint}"
        )
    if cfg.precision == "bf16" and not supports_bf16(backend, device):
        raise PredictError(
            f"precision=bf16: {backend} has no native bf16 on this {device.upper()} (it would run emulated "
            "or in f32); use precision=fp32"
        )


def _check_export(runtime: Runtime, settings: dict[str, Any], model: Path, ckpt: str) -> None:
    """The exported file's metadata against the checkpoint's network settings; PredictError on a mismatch."""
    keys = ("input_size", "num_landmarks", "num_nb", "net_stride", "backbone", "merge")
    missing = [k for k in keys if k not in runtime.metadata]
    if missing:
        raise PredictError(
            f"model={model} carries no {', '.join(missing)} in its metadata: export it with "
            f"`python -m pipnet_lit.export ckpt={ckpt}`"
        )
    differ = [
        f"{k} {runtime.metadata[k]!r} vs {settings[k]!r}" for k in keys if runtime.metadata[k] != settings[k]
    ]
    if differ:
        raise PredictError(
            f"model={model} does not match ckpt={ckpt} (model vs checkpoint: {'; '.join(differ)}): export "
            f"it from this checkpoint with `python -m pipnet_lit.export ckpt={ckpt}`"
        )


def _runtime_crops(runtime: Runtime, batch_size: int, device: str | None) -> Callable:
    from pipnet_lit.inference import preprocess

    num = runtime.num_landmarks or 0

    def crops(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        landmarks, scores = [], []
        for start in range(0, len(batch), batch_size):
            out = runtime.run(preprocess(batch[start : start + batch_size], device))
            landmarks.append(out[0].float().cpu().numpy())
            scores.append(out[1].float().cpu().numpy())
        if not landmarks:
            return np.zeros((0, num, 2)), np.zeros((0, num), np.float32)
        return np.concatenate(landmarks).astype(np.float64), np.concatenate(scores)

    return crops


def load_landmark_model(cfg: PredictConfig, device: str, num_landmarks: int | None = None) -> LandmarkModel:
    """The network of ``cfg``: the checkpoint's (eager, fp32 or bf16) or the exported ``model=`` file
    (checked against the checkpoint's settings), as one `LandmarkModel`. ``num_landmarks``: the scheme's."""
    from pipnet_lit.checkpoints import read_checkpoint
    from pipnet_lit.runtime import load_runtime

    backend, path = _backend_and_file(cfg)
    if backend in ("onnxruntime", "openvino"):
        if cfg.device not in ("auto", "cpu"):
            raise PredictError(f"backend={backend} runs on the CPU: use device=cpu (or auto)")
        device = "cpu"
    _check_precision(cfg, backend, device)
    if cfg.spinning and backend != "onnxruntime":
        raise PredictError(
            f"spinning=true applies to backend=onnxruntime only (this run's backend is {backend}); drop it"
        )
    info = {"backend": backend, "precision": cfg.precision, "model": str(path) if path else None}
    if cfg.threads and backend in ("eager", "torchscript"):
        import torch

        torch.set_num_threads(cfg.threads)
    if backend == "eager" and cfg.precision == "fp32":  # the predictor's own path, as without backend=
        from pipnet_lit.inference import Predictor

        predictor = Predictor.from_checkpoint(
            cfg.ckpt, device=device, num_landmarks=num_landmarks, batch_size=cfg.batch_size
        )

        def crops(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pred = predictor.crops(batch)
            return pred.landmarks.numpy().astype(np.float64), pred.scores.numpy()

        return LandmarkModel(predictor.input_size, predictor.num_landmarks, crops, info)
    ckpt = read_checkpoint(cfg.ckpt, num_landmarks=num_landmarks)
    if path is None:  # eager bf16: autocast, channels-last (`pipnet_lit.runtime.EagerRuntime`)
        runtime = load_runtime(ckpt.graph(), "eager", cfg.precision, device)
    else:
        # the file's own precision first (fp32 or int8), then checked against the option's; bf16 asks for it
        wanted = "bf16" if cfg.precision == "bf16" else None
        try:
            runtime = load_runtime(
                path, backend, wanted, device, num_threads=cfg.threads, spinning=cfg.spinning
            )
        except ValueError as err:
            raise PredictError(f"model={path}: {err}") from None
        if runtime.precision == "int8" and cfg.precision != "int8":
            raise PredictError(f"model={path} is an int8 export: run it with precision=int8")
        if cfg.precision == "int8" and runtime.precision != "int8":
            fmt = "onnx" if backend == "onnxruntime" else backend
            raise PredictError(
                f"model={path} is an {runtime.precision} export; precision=int8 needs an int8 one: "
                f"`python -m pipnet_lit.export ckpt={cfg.ckpt} format={fmt} quantize=int8 calibrate=...`"
            )
        _check_export(runtime, {**ckpt.settings, "merge": ckpt.merge}, path, cfg.ckpt)
    on_device = device if backend in ("eager", "torchscript") else None
    size, num = int(runtime.metadata["input_size"]), int(runtime.metadata["num_landmarks"])
    return LandmarkModel(size, num, _runtime_crops(runtime, cfg.batch_size, on_device), info)


# -- the run ---------------------------------------------------------------------------------------------


def _round(values: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


class _StageTimer:
    """Seconds per stage (``time.perf_counter``) of a run, and the ``timing`` entry made of them: per stage
    its seconds, its calls, and ``per_second`` = items (images / frames) / its seconds, what the run would
    reach if that stage were all it did (so ``detect`` counts every frame, detected or tracked); the
    ``total_seconds`` and ``end_to_end_per_second`` of the loop over the input; ``setup_seconds`` before it
    (imports, model, detector)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.calls[stage] = self.calls.get(stage, 0) + 1

    def restart(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.start = time.perf_counter()

    def report(self, count: int, unit: str, setup_seconds: float) -> dict[str, Any]:
        total = time.perf_counter() - self.start
        return {
            "unit": unit,
            "count": count,
            "setup_seconds": round(setup_seconds, 4),
            "total_seconds": round(total, 4),
            "seconds": {k: round(v, 5) for k, v in self.seconds.items()},
            "calls": dict(self.calls),
            "per_second": {k: round(count / v, 2) if v > 0 else None for k, v in self.seconds.items()},
            "end_to_end_per_second": round(count / total, 2) if total > 0 else None,
        }


@dataclass
class _Boxes:
    """The faces to crop in one image: their boxes (detector boxes, or boxes carried by tracking), scores,
    and crop boxes (N, 4) ``xyxy``."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    crop_boxes: np.ndarray


def _detect(detector: FaceDetector, image: np.ndarray) -> _Boxes:
    """The detector's faces and their crop boxes; a crop box that misses the image entirely is no face
    (`crop_faces` refuses it)."""
    detections = detector.detect(image)
    boxes, scores = detections.boxes_xyxy, detections.scores
    crop_boxes = detector.crop_rule.apply(boxes)
    h, w = image.shape[:2]
    inside = (np.trunc(np.minimum(crop_boxes[:, 2], w)) > np.trunc(np.maximum(crop_boxes[:, 0], 0))) & (
        np.trunc(np.minimum(crop_boxes[:, 3], h)) > np.trunc(np.maximum(crop_boxes[:, 1], 0))
    )
    if not inside.all():
        boxes, scores, crop_boxes = boxes[inside], scores[inside], crop_boxes[inside]
    return _Boxes(np.asarray(boxes, np.float64), np.asarray(scores, np.float64), crop_boxes)


@dataclass
class _Pending:
    key: Any
    image: np.ndarray
    boxes: _Boxes
    crop_boxes: np.ndarray  # the integer boxes actually cropped
    crops: np.ndarray


def _faces(model: LandmarkModel, pending: list[_Pending]) -> list[list[dict[str, Any]]]:
    """Landmarks of every pending image's crops in one call of the model; each image's faces."""
    from pipnet_lit.inference import uncrop

    if not pending:
        return []
    norm, scores = model.crops(np.concatenate([p.crops for p in pending]))
    out, start = [], 0
    for p in pending:
        stop = start + len(p.crop_boxes)
        pixels = uncrop(norm[start:stop], p.crop_boxes)
        out.append(
            [
                {
                    "box": p.boxes.boxes_xyxy[i],
                    "score": float(p.boxes.scores[i]),
                    "crop_box": p.crop_boxes[i],
                    "landmarks": pixels[i],
                    "landmark_scores": scores[start + i],
                }
                for i in range(stop - start)
            ]
        )
        start = stop
    return out


def _pending(model: LandmarkModel, key: Any, image: np.ndarray, boxes: _Boxes) -> _Pending:
    from pipnet_lit.inference import crop_faces

    crops, frames = crop_faces(image, boxes.crop_boxes, model.input_size)
    return _Pending(key, image, boxes, frames, crops)


class _FaceBatcher:
    """Detects faces per image, batches the crops of several images, and hands back each image's faces."""

    def __init__(
        self,
        model: LandmarkModel,
        detector: FaceDetector,
        batch_size: int,
        timer: _StageTimer,
        on_done: Callable[[Any, np.ndarray, list[dict[str, Any]]], None],
    ) -> None:
        self.model, self.detector, self.batch_size = model, detector, batch_size
        self.timer, self.on_done = timer, on_done
        self.pending: list[_Pending] = []
        self.num_faces = 0

    def add(self, key: Any, image: np.ndarray) -> None:
        with self.timer("detect"):
            boxes = _detect(self.detector, image)
        with self.timer("landmarks"):
            self.pending.append(_pending(self.model, key, image, boxes))
        self.num_faces += len(boxes.crop_boxes)
        if self.num_faces >= self.batch_size or len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending, self.num_faces = self.pending, [], 0
        with self.timer("landmarks"):
            faces = _faces(self.model, pending)
        for p, found in zip(pending, faces, strict=True):
            self.on_done(p.key, p.image, found)


class _Tracker:
    """Crop boxes of a video's faces between detections: each face's box carried from its landmarks in the
    previous frame with the training crop's rule (`pipnet_lit.datasets.geometry.box_from_points_300w`: the
    landmarks' box x ``scale``, clamped to the frame).

    The detector is due on the first frame, every ``every`` frames after a detection, and whenever the last
    frame had no face. A tracked face is lost when its mean landmark score is below ``min_score``, fewer
    than ``min_inside`` of its landmarks lie in the frame, or its carried box is empty.
    """

    def __init__(self, every: int, settings: TrackingConfig) -> None:
        self.every, self.settings = every, settings
        self.faces: list[dict[str, Any]] = []
        self.since = 0  # frames since the last detection, that one included
        self.counts = {"detector": 0, "tracking": 0, "lost": 0}

    def carried(self, width: int, height: int) -> _Boxes | None:
        """The crop boxes of the last frame's faces, or None when the detector is due (or a box is empty)."""
        from pipnet_lit.datasets.geometry import box_from_points_300w

        if not self.faces or self.since >= self.every:
            return None
        boxes = []
        for face in self.faces:
            try:
                box = box_from_points_300w(face["landmarks"], width, height, self.settings.scale)
            except ValueError:  # non-finite landmarks
                return None
            if box.x1 - box.x0 < 2 or box.y1 - box.y0 < 2:
                return None
            boxes.append((box.x0, box.y0, box.x1, box.y1))
        carried = np.asarray(boxes, dtype=np.float64)
        return _Boxes(carried, np.array([f["score"] for f in self.faces], np.float64), carried.copy())

    def lost(self, faces: list[dict[str, Any]], width: int, height: int) -> bool:
        for face in faces:
            if float(np.mean(face["landmark_scores"])) < self.settings.min_score:
                return True
            pts = np.asarray(face["landmarks"])
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
            if float(inside.mean()) < self.settings.min_inside:
                return True
        return False

    def update(self, faces: list[dict[str, Any]], detected: bool) -> None:
        """Keep this frame's faces (their raw landmarks) for the next frame's boxes."""
        self.faces = [{"landmarks": f["landmarks"], "score": f["score"]} for f in faces]
        self.since = 1 if detected else self.since + 1
        self.counts["detector" if detected else "tracking"] += 1


def _face_json(face: dict[str, Any]) -> dict[str, Any]:
    out = {
        "box": _round(face["box"], 2),
        "score": round(float(face["score"]), 5),
        "crop_box": _round(face["crop_box"], 2),
        "landmarks": _round(face["landmarks"], 3),
        "landmark_scores": _round(face["landmark_scores"], 4),
    }
    if "landmarks_raw" in face:
        out["landmarks_raw"] = _round(face["landmarks_raw"], 3)
    return out


def _input_kind(source: str) -> str:
    if source.strip().isdigit():
        return "webcam"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise PredictError(f"input {source} does not exist (an image, a folder, a video or a webcam index)")
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=not enabled, transient=False)


def _check_output(output: Path, inputs: Sequence[Path]) -> None:
    resolved = {p.resolve() for p in inputs}
    if output.resolve() in resolved:
        raise PredictError(f"output={output} is the input itself: choose another output folder")


def predict(cfg: PredictConfig) -> PredictSummary:
    """Run the CLI's job; raises `PredictError` (or ValueError / FileNotFoundError) with a message."""
    _check_numbers(cfg)
    timer = _StageTimer()
    import torch

    from pipnet_lit.detect import build_detector

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    scheme = None
    if cfg.scheme:
        from pipnet_lit.datasets.meta import load_landmark_scheme

        scheme = load_landmark_scheme(cfg.scheme)
    model = load_landmark_model(cfg, device, scheme.num_landmarks if scheme else None)
    detector_args = dict(cfg.detector_args)
    if cfg.detector == "mtcnn":
        detector_args.setdefault("device", device)
    detector = build_detector(cfg.detector, crop=cfg.crop, **detector_args)
    kind = _input_kind(cfg.input)
    output = Path(cfg.output)
    header = {
        "checkpoint": str(cfg.ckpt),
        **model.info,
        "input": str(cfg.input),
        "kind": kind,
        "detector": cfg.detector,
        "crop_rule": asdict(detector.crop_rule) if is_dataclass(detector.crop_rule) else None,
        "num_landmarks": model.num_landmarks,
        "coordinates": "image pixels (x, y), in the training annotations' convention",
    }
    groups = scheme.groups if scheme else None
    setup = time.perf_counter() - timer.start
    if kind in ("image", "folder"):
        summary = _run_images(cfg, kind, model, detector, output, header, groups, timer, setup)
    else:
        summary = _run_video(cfg, kind, model, detector, output, header, groups, timer, setup)
    summary.show_timing = cfg.progress
    return summary


def _run_images(
    cfg: PredictConfig,
    kind: str,
    model: LandmarkModel,
    detector: FaceDetector,
    output: Path,
    header: dict[str, Any],
    groups: dict[str, tuple[int, int]] | None,
    timer: _StageTimer,
    setup: float,
) -> PredictSummary:
    import cv2

    from pipnet_lit.inference import ImageReadError, ImageTooLargeError, load_image

    source = Path(cfg.input)
    if kind == "image":
        files, root = [source], source.parent
    else:
        _check_output(output, [source])
        out_dir = output.resolve()
        files = sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and out_dir not in p.resolve().parents
        )
        root = source
        if not files:
            raise PredictError(f"no images in {source} (looked for {', '.join(IMAGE_SUFFIXES)})")
    summary = PredictSummary(kind, output / JSON_NAME, max_pixels=cfg.max_pixels)
    records: list[dict[str, Any]] = []
    output.mkdir(parents=True, exist_ok=True)

    def done(rel: str, image: np.ndarray, faces: list[dict[str, Any]]) -> None:
        summary.processed += 1
        if not faces:
            if kind == "image":
                raise PredictError(
                    f"no face found in {source} by detector={cfg.detector}: try detector=mtcnn, "
                    "detector_args.angles=[-20,-10,0,10,20] (tilted faces, Haar), or detector=whole if the "
                    "image is a face crop"
                )
            summary.no_face.append(rel)
            return
        summary.faces += len(faces)
        height, width = image.shape[:2]
        records.append(
            {"file": rel, "width": width, "height": height, "faces": [_face_json(f) for f in faces]}
        )
        if cfg.save_images:
            target = output / rel
            if target.resolve() == (root / rel).resolve():
                raise PredictError(f"output={output} would overwrite the input {root / rel}: choose another")
            target.parent.mkdir(parents=True, exist_ok=True)
            with timer("draw"):
                annotated = draw_faces(image, faces, cfg.draw, groups)
            with timer("encode"):
                ok, encoded = cv2.imencode(target.suffix if target.suffix else ".png", annotated)
                if not ok:
                    target = target.with_suffix(".png")
                    ok, encoded = cv2.imencode(".png", annotated)
                encoded.tofile(str(target))
            summary.written.append(target)

    batcher = _FaceBatcher(model, detector, cfg.batch_size, timer, done)
    timer.restart()
    with _progress(cfg.progress and kind == "folder") as progress:
        task = progress.add_task("faces", total=len(files))
        for path in files:
            rel = path.relative_to(root).as_posix()
            try:
                with timer("decode"):
                    image = load_image(path, max_pixels=cfg.max_pixels)
            except ImageReadError as err:
                if kind == "image":
                    raise PredictError(str(err)) from None
                (summary.too_large if isinstance(err, ImageTooLargeError) else summary.unreadable).append(rel)
            else:
                batcher.add(rel, image)
            progress.advance(task)
        batcher.flush()
    summary.timing = timer.report(summary.processed, "images", setup)
    skipped = {"unreadable": summary.unreadable, "too_large": summary.too_large, "no_face": summary.no_face}
    _write_json(
        summary.json_path, {**header, "images": records, "skipped": skipped, "timing": summary.timing}
    )
    return summary


class _FrameReader:
    """The frames of a capture with their index in the stream, skipping those that fail to decode.

    A failed read (``read`` False, or an OpenCV error) below the frame count the video reports (``total``;
    0: unknown, a webcam) is a damaged frame: skipped, and its index listed in ``failed``. At or after that
    count it is the end of the video. Without a count, failed reads followed by a good frame are damaged
    frames, and ``max_failed`` of them in a row end the stream (for a webcam, with a note in ``stopped``);
    with a count, ``max_failed`` in a row stop the video early with a note.
    """

    def __init__(
        self,
        capture: cv2.VideoCapture,
        label: str,
        total: int,
        max_frames: int | None,
        max_failed: int,
        *,
        camera: bool = False,
    ) -> None:
        self.capture, self.label, self.total, self.camera = capture, label, total, camera
        self.max_frames, self.max_failed = max_frames, max_failed
        self.failed: list[int] = []
        self.stopped: str | None = None

    def _read(self) -> np.ndarray | None:
        import cv2

        try:
            ok, frame = self.capture.read()
        except cv2.error:  # a decoder error surfaced as an exception: a damaged frame, like ok=False
            return None
        return frame if ok and frame is not None and frame.size else None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        index = 0
        run: list[int] = []  # the current run of failed reads
        while self.max_frames is None or index < self.max_frames:
            frame = self._read()
            if frame is not None:
                self.failed += run
                run = []
                yield index, frame
                index += 1
                continue
            if self.total and index >= self.total:  # past the reported frame count: the end
                break
            run.append(index)
            index += 1
            if len(run) >= self.max_failed:
                if self.total:
                    self.stopped = (
                        f"stopped reading {self.label} after {len(run)} frames in a row failed to decode "
                        f"(frames {run[0]}-{run[-1]} of the {self.total} it reports; max_failed_frames="
                        f"{self.max_failed})"
                    )
                    self.failed += run
                elif self.camera:
                    self.stopped = (
                        f"stopped reading {self.label} after {len(run)} reads in a row failed "
                        f"(max_failed_frames={self.max_failed}): the camera stopped delivering frames"
                    )
                return  # without a frame count, a run that never recovers is the end of the stream
        if self.total:
            self.failed += run  # failed reads below the reported count (a truncated or damaged tail)


def _timed(frames: Iterator[tuple[int, np.ndarray]], timer: _StageTimer) -> Iterator[tuple[int, np.ndarray]]:
    """The frames, with the time spent reading (decoding) each one counted as ``decode``."""
    iterator = iter(frames)
    while True:
        with timer("decode"):
            item = next(iterator, None)
        if item is None:
            return
        yield item


def _run_video(
    cfg: PredictConfig,
    kind: str,
    model: LandmarkModel,
    detector: FaceDetector,
    output: Path,
    header: dict[str, Any],
    groups: dict[str, tuple[int, int]] | None,
    timer: _StageTimer,
    setup: float,
) -> PredictSummary:
    import cv2

    from pipnet_lit.smoothing import LandmarkSmoother

    if kind == "webcam":
        capture, name, label = (
            cv2.VideoCapture(int(cfg.input)),
            f"webcam{int(cfg.input)}",
            f"webcam {cfg.input}",
        )
    else:
        capture, name, label = cv2.VideoCapture(cfg.input), Path(cfg.input).stem, f"video {cfg.input}"
    if not capture.isOpened():
        raise PredictError(
            f"cannot open {label}: OpenCV could not read it (not a video, an unsupported codec, or no such "
            "camera)"
        )
    every = cfg.detect_every or (1 if cfg.detector == "whole" else DEFAULT_DETECT_EVERY)
    tracker = _Tracker(every, cfg.tracking) if every > 1 else None
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reported = capture.get(cv2.CAP_PROP_FPS)
        fps = float(cfg.fps or (reported if reported and np.isfinite(reported) and reported > 0 else 25.0))
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "video" else 0
        reported = max(reported, 0)
        total = min(reported, cfg.max_frames) if cfg.max_frames and reported > 0 else reported
        if cfg.max_pixels and width * height > cfg.max_pixels:
            raise PredictError(
                f"{label} has {width}x{height} frames ({width * height:,} pixels), more than max_pixels="
                f"{cfg.max_pixels:,}: shrink it or raise max_pixels (0: no limit)"
            )
        output.mkdir(parents=True, exist_ok=True)
        summary = PredictSummary(kind, output / JSON_NAME)
        reader = _FrameReader(
            capture, label, reported, cfg.max_frames, cfg.max_failed_frames, camera=kind == "webcam"
        )
        target = output / f"{name}.mp4"
        if kind == "video":
            _check_output(target, [Path(cfg.input)])
        writer = None
        frames: list[dict[str, Any]] = []
        smoother = LandmarkSmoother(**asdict(cfg.smoothing)) if cfg.smooth else None
        sources: dict[int, tuple[str, bool]] = {}  # frame -> (boxes_from, tracking lost), when tracking

        def done(index: int, frame: np.ndarray, faces: list[dict[str, Any]]) -> None:
            nonlocal writer
            summary.processed += 1
            summary.faces += len(faces)
            time = index / fps
            if smoother is not None:
                with timer("smooth"):
                    boxes = np.array([f["crop_box"] for f in faces]).reshape(-1, 4)
                    raw = np.array([f["landmarks"] for f in faces]).reshape(len(faces), -1, 2)
                    smoothed = smoother(time, boxes, raw)
                    for face, lms in zip(faces, smoothed, strict=True):
                        face["landmarks_raw"], face["landmarks"] = face["landmarks"], lms
            if not faces:
                summary.no_face.append(str(index))
            record: dict[str, Any] = {"frame": index, "time": round(time, 4)}
            boxes_from, lost = sources.pop(index, ("detector", False))
            record["boxes_from"] = boxes_from
            if lost:
                record["tracking_lost"] = True
            frames.append({**record, "faces": [_face_json(f) for f in faces]})
            if cfg.save_images:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise PredictError(f"cannot write the video {target} (OpenCV mp4v writer)")
                with timer("draw"):
                    annotated = draw_faces(frame, faces, cfg.draw, groups)
                with timer("encode"):
                    writer.write(annotated)

        def tracked(index: int, frame: np.ndarray) -> None:
            """One frame with tracking: carried boxes, or the detector when due or when a face is lost."""
            assert tracker is not None
            h, w = frame.shape[:2]
            with timer("track"):
                carried = tracker.carried(w, h)
            faces = None
            if carried is not None:
                with timer("landmarks"):
                    (faces,) = _faces(model, [_pending(model, index, frame, carried)])
                with timer("track"):
                    lost = tracker.lost(faces, w, h)
                if lost:
                    tracker.counts["lost"] += 1
                    faces = None
                else:
                    sources[index] = ("tracking", False)
            if faces is None:
                with timer("detect"):
                    boxes = _detect(detector, frame)
                with timer("landmarks"):
                    (faces,) = _faces(model, [_pending(model, index, frame, boxes)])
                sources[index] = ("detector", carried is not None)
            tracker.update(faces, detected=sources[index][0] == "detector")
            done(index, frame, faces)

        batcher = _FaceBatcher(model, detector, cfg.batch_size, timer, done)
        timer.restart()
        try:
            with _progress(cfg.progress) as progress:
                task = progress.add_task(label, total=total or None)
                for index, frame in _timed(reader, timer):
                    if tracker is None:
                        batcher.add(index, frame)
                    else:
                        tracked(index, frame)
                    progress.advance(task)
                batcher.flush()
        except KeyboardInterrupt:  # a webcam runs until stopped: keep what was seen
            batcher.flush()
        finally:
            if writer is not None:
                with timer("encode"):
                    writer.release()
    finally:
        capture.release()
    summary.unreadable = [str(i) for i in reader.failed]
    summary.stopped = reader.stopped
    if summary.processed == 0:
        failed = f" ({len(reader.failed)} frames failed to decode)" if reader.failed else ""
        raise PredictError(f"cannot read any frame from {label}{failed}")
    if writer is not None:
        summary.written.append(target)
    summary.timing = timer.report(summary.processed, "frames", setup)
    counts = tracker.counts if tracker else {"detector": summary.processed, "tracking": 0, "lost": 0}
    summary.boxes = dict(counts)
    video = {
        "fps": fps,
        "width": width,
        "height": height,
        "frames": summary.processed,
        "frames_reported": reported or None,
        "stopped": reader.stopped,
    }
    body = {
        **header,
        "video": video,
        "smoothing": asdict(cfg.smoothing) if cfg.smooth else None,
        "detect_every": every,
        "tracking": {**asdict(cfg.tracking), "frames": counts} if tracker else None,
    }
    skipped = {"unreadable": summary.unreadable, "no_face": summary.no_face}
    _write_json(summary.json_path, {**body, "frames": frames, "skipped": skipped, "timing": summary.timing})
    return summary


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """``predictions.json``, atomically (`pipnet_lit.files.atomic_write_text`): a killed run leaves the old
    file or the new one."""
    atomic_write_text(path, json.dumps(data))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 done, 1 bad input, 2 bad options)."""
    try:
        cfg = parse_config(list(sys.argv[1:] if argv is None else argv))
    except HelpRequested as done:
        print(done.text, end="")
        return 0
    except UsageError as err:
        print(f"{COMMAND.prog}: error: {err.message}\n{err.usage}", file=sys.stderr)
        return 2
    try:
        summary = predict(cfg)
    except (PredictError, ValueError, FileNotFoundError, ImportError) as err:  # ImageReadError: a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.message())
    return 0


if __name__ == "__main__":
    sys.exit(main())
