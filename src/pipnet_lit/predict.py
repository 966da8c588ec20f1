"""Landmarks on photos, folders, videos and webcams: ``python -m pipnet_lit.predict ckpt=... input=...``.

    python -m pipnet_lit.predict ckpt=model.ckpt input=photo.jpg                 # -> predictions/photo.jpg
    python -m pipnet_lit.predict ckpt=model.ckpt input=photos/ output=out/ detector=mtcnn
    python -m pipnet_lit.predict ckpt=model.ckpt input=clip.mp4 smooth=true     # -> predictions/clip.mp4
    python -m pipnet_lit.predict ckpt=model.ckpt input=0 max_frames=300         # webcam 0
    python -m pipnet_lit.predict ckpt=model.ckpt input=crops/ detector=whole    # images that are face crops

Writes the annotated image(s) or video into ``output`` (default ``predictions/``; folders keep their
sub-folders, a video becomes ``<output>/<stem>.mp4``) and ``<output>/predictions.json``: every face of every
image / frame with its detector box and score, the crop box, the landmarks in image pixels and each
landmark's score (plus ``landmarks_raw`` when smoothing). Faces are batched across images and frames
(``batch_size``). Options (``key=value``, nested with dots):

  ckpt            a pipnet-lit checkpoint (training's *.ckpt, or `python -m pipnet_lit.convert` output)
  input           an image, a folder of images (recursive), a video file, or a webcam index (0, 1, ...)
  output          output folder (must not be the input folder)
  detector        haar (default, offline), mtcnn (pip install --no-deps facenet-pytorch), whole, or a
                  class path pkg.module:Class; detector_args.<name>=... are its arguments, e.g.
                  detector_args.angles=[-20,-10,0,10,20] (tilted faces, Haar) or detector_args.min_score=0.95
  crop            override the detector's box -> crop rule: crop.scale_x=1.2 crop.scale_y=1.0 crop.shift_y=0.1
  scheme          a landmark scheme (ibug68, wflw98, ... or a YAML path): draws its groups as lines and checks
                  that the checkpoint predicts as many landmarks
  smooth          true: One Euro filter on video landmarks per face track (smoothing.min_cutoff, .beta,
                  .d_cutoff, .min_iou); off by default
  max_pixels      refuse images (and videos whose frames are) larger than this many pixels, read from the
                  file's header before decoding (default 100000000; 0 or null: no limit)
  max_failed_frames  stop a video or webcam after this many frames in a row fail to decode (default 10)
  batch_size, device (auto | cpu | cuda), max_frames, fps (for inputs that do not report one), progress,
  save_images (false: JSON only), draw.points / draw.lines / draw.boxes / draw.radius / draw.color

Bad input: an unreadable or too large single image, an image without a face, a video or webcam that cannot be
opened or has frames over max_pixels, and a checkpoint that is not one or does not fit the scheme stop with a
message (exit code 1); in a folder, unreadable images, images over max_pixels and images without a face are
skipped and counted. In a video, frames without a face are counted, and frames that fail to decode are
skipped and counted (a failed read before the frame count the video reports is a damaged frame; after it,
the end of the video); ``max_failed_frames`` failures in a row stop the video with a note. The JSON file is
written atomically: a killed run leaves the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipnet_lit.cli import Command, HelpRequested, UsageError, option
from pipnet_lit.detect import Detections, FaceDetector, build_detector
from pipnet_lit.files import atomic_write_text
from pipnet_lit.inference import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    ImageTooLargeError,
    Predictor,
    crop_faces,
    load_image,
    uncrop,
)
from pipnet_lit.smoothing import LandmarkSmoother

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "DrawConfig",
    "PredictConfig",
    "PredictError",
    "PredictSummary",
    "SmoothingConfig",
    "draw_faces",
    "main",
    "parse_config",
    "predict",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".jp2")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
JSON_NAME = "predictions.json"


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
    detector: str = option("haar", help="haar, mtcnn, whole, or a class path pkg.module:Class")
    detector_args: dict[str, Any] = option(
        {}, help="the detector's arguments, e.g. detector_args.angles=[-20,0,20]"
    )
    crop: dict[str, float] | None = option(None, help="the detector box -> crop rule, e.g. crop.scale_x=1.2")
    scheme: str | None = option(None, help="landmark scheme (ibug68, wflw98, ... or a YAML path) to draw")
    batch_size: int = option(32, help="faces per forward pass")
    device: str = option("auto", help="auto, cpu or cuda")
    smooth: bool = option(False, help="One Euro filter on video landmarks per face track")
    smoothing: SmoothingConfig = option(default_factory=SmoothingConfig, help="smoothing settings")
    draw: DrawConfig = option(default_factory=DrawConfig, help="drawing settings")
    save_images: bool = option(True, help="write annotated images / video (false: JSON only)")
    max_frames: int | None = option(None, help="stop a video or webcam after this many frames")
    max_pixels: int | None = option(
        DEFAULT_MAX_PIXELS, help="refuse images / video frames of more pixels than this (0 or null: no limit)"
    )
    max_failed_frames: int = option(10, help="stop a video or webcam after this many failed reads in a row")
    fps: float | None = option(None, help="frame rate for inputs that do not report one")
    progress: bool = option(True, help="show a progress bar")


COMMAND = Command(PredictConfig, prog="python -m pipnet_lit.predict", doc=__doc__, style="key=value")


@dataclass
class PredictSummary:
    """What a run did: the JSON file, the annotated files, and the counts of faces and skipped inputs."""

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
        return text


def _shown(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


# -- config ----------------------------------------------------------------------------------------------


def parse_config(argv: Sequence[str]) -> PredictConfig:
    """``key=value`` arguments (nested with dots) over the defaults, type-checked (`pipnet_lit.cli`);
    `pipnet_lit.cli.UsageError` names a bad key or value."""
    return COMMAND.parse(argv)


# -- drawing ---------------------------------------------------------------------------------------------


def draw_faces(
    image: np.ndarray,
    faces: list[dict[str, Any]],
    draw: DrawConfig,
    groups: dict[str, tuple[int, int]] | None,
) -> np.ndarray:
    """A copy of the BGR image with each face's crop box, landmark points and group polylines."""
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


# -- the run ---------------------------------------------------------------------------------------------


def _round(values: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


@dataclass
class _Pending:
    key: Any
    image: np.ndarray
    detections: Any
    crop_boxes: np.ndarray
    crops: np.ndarray


class _FaceBatcher:
    """Detects faces per image, batches the crops of several images, and hands back each image's faces."""

    def __init__(
        self,
        predictor: Predictor,
        detector: FaceDetector,
        batch_size: int,
        on_done: Callable[[Any, np.ndarray, list[dict[str, Any]]], None],
    ) -> None:
        self.predictor, self.detector, self.batch_size, self.on_done = (
            predictor,
            detector,
            batch_size,
            on_done,
        )
        self.pending: list[_Pending] = []
        self.num_faces = 0

    def add(self, key: Any, image: np.ndarray) -> None:
        detections = self.detector.detect(image)
        crop_boxes = self.detector.crop_rule.apply(detections.boxes_xyxy)
        h, w = image.shape[:2]  # a crop box that misses the image entirely is no face (crop_faces refuses it)
        inside = (np.trunc(np.minimum(crop_boxes[:, 2], w)) > np.trunc(np.maximum(crop_boxes[:, 0], 0))) & (
            np.trunc(np.minimum(crop_boxes[:, 3], h)) > np.trunc(np.maximum(crop_boxes[:, 1], 0))
        )
        if not inside.all():
            detections = Detections(detections.boxes_xyxy[inside], detections.scores[inside])
            crop_boxes = crop_boxes[inside]
        crops, frames = crop_faces(image, crop_boxes, self.predictor.input_size)
        self.pending.append(_Pending(key, image, detections, frames, crops))
        self.num_faces += len(frames)
        if self.num_faces >= self.batch_size or len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending, self.num_faces = self.pending, [], 0
        crops = np.concatenate([p.crops for p in pending])
        pred = self.predictor.crops(crops)
        norm = pred.landmarks.numpy().astype(np.float64)
        scores = pred.scores.numpy()
        start = 0
        for p in pending:
            stop = start + len(p.crop_boxes)
            pixels = uncrop(norm[start:stop], p.crop_boxes)
            faces = [
                {
                    "box": p.detections.boxes_xyxy[i],
                    "score": float(p.detections.scores[i]),
                    "crop_box": p.crop_boxes[i],
                    "landmarks": pixels[i],
                    "landmark_scores": scores[start + i],
                }
                for i in range(stop - start)
            ]
            start = stop
            self.on_done(p.key, p.image, faces)


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
    if cfg.max_pixels is not None and cfg.max_pixels < 0:
        raise ValueError(f"max_pixels must be >= 0 (0 or null: no limit), got {cfg.max_pixels}")
    if cfg.max_failed_frames < 1:
        raise ValueError(f"max_failed_frames must be >= 1, got {cfg.max_failed_frames}")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    scheme = None
    if cfg.scheme:
        from pipnet_lit.datasets.meta import load_landmark_scheme

        scheme = load_landmark_scheme(cfg.scheme)
    predictor = Predictor.from_checkpoint(
        cfg.ckpt,
        device=device,
        num_landmarks=scheme.num_landmarks if scheme else None,
        batch_size=cfg.batch_size,
    )
    detector_args = dict(cfg.detector_args)
    if cfg.detector == "mtcnn":
        detector_args.setdefault("device", device)
    detector = build_detector(cfg.detector, crop=cfg.crop, **detector_args)
    kind = _input_kind(cfg.input)
    output = Path(cfg.output)
    header = {
        "checkpoint": str(cfg.ckpt),
        "input": str(cfg.input),
        "kind": kind,
        "detector": cfg.detector,
        "crop_rule": asdict(detector.crop_rule) if is_dataclass(detector.crop_rule) else None,
        "num_landmarks": predictor.num_landmarks,
        "coordinates": "image pixels (x, y), in the training annotations' convention",
    }
    groups = scheme.groups if scheme else None
    if kind in ("image", "folder"):
        return _run_images(cfg, kind, predictor, detector, output, header, groups)
    return _run_video(cfg, kind, predictor, detector, output, header, groups)


def _run_images(
    cfg: PredictConfig,
    kind: str,
    predictor: Predictor,
    detector: FaceDetector,
    output: Path,
    header: dict[str, Any],
    groups: dict[str, tuple[int, int]] | None,
) -> PredictSummary:
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
            annotated = draw_faces(image, faces, cfg.draw, groups)
            ok, encoded = cv2.imencode(target.suffix if target.suffix else ".png", annotated)
            if not ok:
                target = target.with_suffix(".png")
                ok, encoded = cv2.imencode(".png", annotated)
            encoded.tofile(str(target))
            summary.written.append(target)

    batcher = _FaceBatcher(predictor, detector, cfg.batch_size, done)
    with _progress(cfg.progress and kind == "folder") as progress:
        task = progress.add_task("faces", total=len(files))
        for path in files:
            rel = path.relative_to(root).as_posix()
            try:
                image = load_image(path, max_pixels=cfg.max_pixels)
            except ImageReadError as err:
                if kind == "image":
                    raise PredictError(str(err)) from None
                (summary.too_large if isinstance(err, ImageTooLargeError) else summary.unreadable).append(rel)
            else:
                batcher.add(rel, image)
            progress.advance(task)
        batcher.flush()
    skipped = {"unreadable": summary.unreadable, "too_large": summary.too_large, "no_face": summary.no_face}
    _write_json(summary.json_path, {**header, "images": records, "skipped": skipped})
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


def _run_video(
    cfg: PredictConfig,
    kind: str,
    predictor: Predictor,
    detector: FaceDetector,
    output: Path,
    header: dict[str, Any],
    groups: dict[str, tuple[int, int]] | None,
) -> PredictSummary:
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

        def done(index: int, frame: np.ndarray, faces: list[dict[str, Any]]) -> None:
            nonlocal writer
            summary.processed += 1
            summary.faces += len(faces)
            time = index / fps
            if smoother is not None:
                boxes = np.array([f["crop_box"] for f in faces]).reshape(-1, 4)
                raw = np.array([f["landmarks"] for f in faces]).reshape(len(faces), -1, 2)
                smoothed = smoother(time, boxes, raw)
                for face, lms in zip(faces, smoothed, strict=True):
                    face["landmarks_raw"], face["landmarks"] = face["landmarks"], lms
            if not faces:
                summary.no_face.append(str(index))
            frames.append({"frame": index, "time": round(time, 4), "faces": [_face_json(f) for f in faces]})
            if cfg.save_images:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise PredictError(f"cannot write the video {target} (OpenCV mp4v writer)")
                writer.write(draw_faces(frame, faces, cfg.draw, groups))

        batcher = _FaceBatcher(predictor, detector, cfg.batch_size, done)
        try:
            with _progress(cfg.progress) as progress:
                task = progress.add_task(label, total=total or None)
                for index, frame in reader:
                    batcher.add(index, frame)
                    progress.advance(task)
                batcher.flush()
        except KeyboardInterrupt:  # a webcam runs until stopped: keep what was seen
            batcher.flush()
        finally:
            if writer is not None:
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
    video = {
        "fps": fps,
        "width": width,
        "height": height,
        "frames": summary.processed,
        "frames_reported": reported or None,
        "stopped": reader.stopped,
    }
    body = {**header, "video": video, "smoothing": asdict(cfg.smoothing) if cfg.smooth else None}
    skipped = {"unreadable": summary.unreadable, "no_face": summary.no_face}
    _write_json(summary.json_path, {**body, "frames": frames, "skipped": skipped})
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
    except (PredictError, ImageReadError, ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.message())
    return 0


if __name__ == "__main__":
    sys.exit(main())
