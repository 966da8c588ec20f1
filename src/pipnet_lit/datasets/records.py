"""What a reader emits: one :class:`FaceRecord` per face, and the error policy for bad input.

A reader turns a raw download into records without touching pixels it does not need: the image is a
lazy :class:`ImageSource`, the landmarks and box are the raw numbers from the annotation file, and the
record's ``rule`` (a small frozen dataclass, so it can be fingerprinted) turns them into the crop box and
the normalized landmarks once the image size is known. The crop cache (``cache.py``) does the rest.
"""

from __future__ import annotations

import codecs
import io
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from pipnet_lit.datasets.geometry import CropBox

T = TypeVar("T")

__all__ = [
    "ArrayImage",
    "BadInput",
    "BoxRule",
    "DataFormatError",
    "FaceRecord",
    "FileImage",
    "ImageSource",
    "MissingDownloadError",
    "is_file",
    "read_text",
    "parsed_lines",
    "read_text_lines",
]


class DataFormatError(ValueError):
    """A raw file that does not follow its format; the message names the file (and line or index)."""


class MissingDownloadError(FileNotFoundError):
    """A dataset folder or file that is not where the dataset description says it should be."""


class ImageSource(Protocol):
    """A lazily read image."""

    def load(self) -> np.ndarray:
        """(H, W, 3) uint8 BGR (grayscale sources become 3-channel)."""
        ...

    def identity(self) -> str:
        """A string that changes whenever the pixels may have changed (for cache invalidation)."""
        ...

    def describe(self) -> str:
        """Where the image comes from, for error messages."""
        ...


@dataclass(frozen=True)
class FileImage:
    """An image file read with ``cv2.imread(IMREAD_COLOR)`` (3-channel BGR, grayscale files too)."""

    path: Path
    key: str = ""  # identity relative to the dataset folder (so a moved download stays a cache hit)

    def load(self) -> np.ndarray:
        if not is_file(self.path):
            raise DataFormatError(f"image not found: {self.path}")
        try:
            image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        except cv2.error as err:  # e.g. a header claiming more pixels than OpenCV's limit
            raise DataFormatError(
                f"{self.path}: could not decode the image ({getattr(err, 'err', err)})"
            ) from None
        if image is None:
            raise DataFormatError(f"{self.path}: could not decode the image (corrupt or not an image file?)")
        return image

    def identity(self) -> str:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = -1
        return f"{self.key or self.path.name}:{size}"

    def describe(self) -> str:
        return str(self.path)


@dataclass(frozen=True, eq=False)
class ArrayImage:
    """An image already in memory (e.g. decoded from a ``.mat`` file): RGB or gray arrays are converted."""

    array: np.ndarray
    source: str
    rgb: bool = True  # MATLAB stores RGB; the cache works in BGR like cv2.imread

    def load(self) -> np.ndarray:
        return to_bgr_uint8(self.array, self.source, rgb=self.rgb)

    def identity(self) -> str:
        import hashlib

        arr = np.ascontiguousarray(self.array)
        return f"{self.source}:{arr.shape}:{hashlib.sha1(arr.tobytes()).hexdigest()[:16]}"

    def describe(self) -> str:
        return self.source


def to_bgr_uint8(array: np.ndarray, source: str, rgb: bool = True) -> np.ndarray:
    """(H, W) gray, (H, W, 1) or (H, W, 3) RGB/BGR array -> (H, W, 3) uint8 BGR; clear error otherwise."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "biuf":  # text, objects, complex numbers: not pixels
        raise DataFormatError(f"{source}: expected an image of numbers, got an array of {arr.dtype}")
    if arr.size == 0:
        raise DataFormatError(f"{source}: expected a gray or 3-channel image, got an empty array {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and float(np.nanmax(arr)) <= 1.0:
            arr = np.clip(np.round(arr * 255.0), 0, 255)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2BGR)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr[:, :, ::-1] if rgb else arr)
    raise DataFormatError(f"{source}: expected a gray or 3-channel image, got an array of shape {arr.shape}")


class BoxRule(Protocol):
    """Turns a record's raw landmarks / box into the crop box and normalized landmarks.

    Implementations are frozen dataclasses (their ``repr`` is part of the cache fingerprint).
    """

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        """Returns the crop box (pixels) and (L, 2) float64 landmarks normalized to it (None: unlabeled)."""
        ...


@dataclass
class FaceRecord:
    """One face of a raw dataset, before cropping.

    Attributes:
        name: crop name stem, unique within a split and equal to the official crop name's stem
            (``afw_134212_1``, ``wflw_test_0001``, ``cofw_train_0001``, ``aflw_train_00005``, ``000001``).
        image: where the pixels come from.
        rule: the dataset's box rule (see :class:`BoxRule`).
        points: (L, 2) float64 raw landmarks in source pixels as the file gives them, or None (unlabeled).
        box: the raw box numbers from the file in the format's own convention, or None.
        attributes: per-face facts usable in split filters (WFLW flags, source folder, index, ...).
        source: where the annotation came from (``file:line`` or ``file[index]``), for error messages.
    """

    name: str
    image: ImageSource
    rule: BoxRule
    points: np.ndarray | None = None
    box: tuple[float, ...] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def fingerprint(self) -> str:
        """Everything the crop depends on except the pixels' identity and the cache parameters."""
        pts = "-" if self.points is None else np.asarray(self.points, dtype=np.float64).tobytes().hex()
        return f"{self.name}|{self.image.identity()}|{pts}|{self.box!r}|{self.rule!r}"


class BadInput:
    """What to do with a malformed annotation line or an unreadable image: skip it (counted) or raise.

    ``mode="raise"`` (evaluation default) raises :class:`DataFormatError`; ``mode="skip"`` (training
    default) records the message and goes on; :meth:`warn_summary` then warns once with the count.
    """

    def __init__(self, mode: str = "raise", what: str = "") -> None:
        if mode not in ("raise", "skip"):
            raise ValueError(f"bad-input mode must be 'raise' or 'skip', got {mode!r}")
        self.mode = mode
        self.what = what
        self.skipped: list[str] = []

    def __call__(self, message: str) -> None:
        if self.mode == "raise":
            raise DataFormatError(
                f"{message} (set data.bad_input.{'train' if 'train' in self.what else 'eval'}=skip to skip "
                "such samples with a warning)"
            )
        self.skipped.append(message)

    def warn_summary(self) -> None:
        if self.skipped:
            more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
            what = self.what or "dataset"
            warnings.warn(
                f"{what}: skipped {len(self.skipped)} bad sample(s): {self.skipped[0]}{more}",
                stacklevel=2,
            )


def read_text(path: Path, error: type[DataFormatError] = DataFormatError) -> str:
    """The text of a UTF-8 file, a leading byte-order mark dropped, line ends as in the file.

    Raises:
        error: the file is not UTF-8 (a UTF-16 or Latin-1 file); the message names the file and the line of
            the first byte that is not UTF-8.
    """
    data = Path(path).read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        head = data[: err.start]
        line = 1 + head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n")
        raise error(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}: {err.reason}); save the file as "
            "UTF-8 (is it UTF-16 or Latin-1?)"
        ) from None
    return text


def read_text_lines(
    path: Path, error: type[DataFormatError] = DataFormatError, *, keepends: bool = True
) -> list[str]:
    """The lines of a UTF-8 text file as ``open()`` iterates them (``\\n``, ``\\r\\n`` and ``\\r`` ends; each
    line ends in ``\\n`` but maybe the last; ``keepends=False``: without it), so line numbers are an
    editor's; errors as :func:`read_text`."""
    lines = list(io.StringIO(read_text(path, error), newline=None))
    return lines if keepends else [line.rstrip("\n") for line in lines]


def parsed_lines(
    path: Path, parse: Callable[[list[str]], T], bad: BadInput, *, comment: str | None = None
) -> Iterator[tuple[int, str, T]]:
    """``(line number, "path:line", parse(fields))`` for each non-blank line of a UTF-8 text file (and not a
    ``comment`` line, when given); a line whose ``parse`` raises ValueError goes to ``bad`` as
    ``"path:line: <error>; fix or delete the line"`` and is skipped."""
    for line_no, line in enumerate(read_text_lines(path), start=1):
        fields = line.split()
        if not fields or (comment is not None and fields[0].startswith(comment)):
            continue
        where = f"{path}:{line_no}"
        try:
            parsed = parse(fields)
        except ValueError as err:
            bad(f"{where}: {err}; fix or delete the line")
            continue
        yield line_no, where, parsed


def is_file(path: Path) -> bool:
    """``path.is_file()``, but False also where the system refuses the name (too long, ...): a path read from
    an annotation file then names a missing image rather than raising OSError."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def relative_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (the path itself when it is not under ``root``)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return path.as_posix()


def load_image_bgr(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 BGR with ``cv2.imread`` (grayscale files become 3-channel)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return FileImage(path).load()
