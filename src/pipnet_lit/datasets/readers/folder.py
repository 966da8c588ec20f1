"""A generic unlabeled pool: a folder of face images, whole or with a text file of face boxes.

Without ``boxes``: every image (``.jpg``/``.jpeg``/``.png``/``.bmp``, any case; hidden files skipped) of
the folder ``images`` (and its subfolders with ``recursive: true``), sorted by relative path, each one
crop of the whole image (box ``(0, 0, W, H)``).

With ``boxes``: a text file (path relative to the dataset folder) of lines
``relative/path x_min y_min x_max y_max`` (path relative to ``images``, numbers in pixels, floats allowed;
blank lines and ``#`` comments skipped), one record per line in file order. Each box is enlarged by
``w * (scale - 1) / 2`` on the left and right and ``h * (scale - 1) / 2`` at the top and bottom
(``w = x_max - x_min``, the WFLW convention), clamped to ``[0, W - 1] x [0, H - 1]``, cropped with
``int()`` bounds.

Names: the relative path without its extension, ``/`` -> ``_`` (``party/img_3``  -> ``party_img_3``); an
image with several box lines gives ``<name>_1``, ``<name>_2``, ... in line order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.geometry import CropBox, clamp_box, expand_box, margin
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FaceRecord,
    FileImage,
    MissingDownloadError,
    is_file,
    parsed_lines,
    relative_key,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LINE_FORMAT = "'relative/path x_min y_min x_max y_max'"


@dataclass(frozen=True)
class WholeImage:
    """The whole image is the face crop: box ``(0, 0, W, H)``."""

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        return CropBox(0, 0, image_w, image_h), None


@dataclass(frozen=True)
class ScaledBox:
    """A given ``(x_min, y_min, x_max, y_max)`` box, each side moved out by ``size * (scale - 1) / 2``."""

    scale: float = 1.0

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        assert box is not None, "the box rule needs a box"
        x_min, y_min, x_max, y_max = box
        dx = margin(x_max - x_min, self.scale)
        dy = margin(y_max - y_min, self.scale)
        return clamp_box(*expand_box(x_min, y_min, x_max, y_max, dx, dy, dx, dy), image_w, image_h), None


def image_name(relative: str) -> str:
    """``party/img_3.jpg`` -> ``party_img_3``."""
    return Path(relative).with_suffix("").as_posix().replace("/", "_")


def list_images(image_dir: Path, recursive: bool) -> list[str]:
    """Relative POSIX paths of the images in ``image_dir`` (sorted; hidden files and folders skipped)."""
    candidates = image_dir.rglob("*") if recursive else image_dir.iterdir()
    found = []
    for path in candidates:
        relative = path.relative_to(image_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(relative.as_posix())
    return sorted(found)


def parse_box_line(fields: list[str]) -> tuple[str, tuple[float, float, float, float]]:
    """``['a/b.jpg', '1', '2', '30.5', '40']`` -> (path, box); ValueError when malformed."""
    if len(fields) != 5:
        raise ValueError(f"expected {LINE_FORMAT}, got {len(fields)} fields")
    try:
        box = tuple(float(v) for v in fields[1:])
    except ValueError as err:
        raise ValueError(f"expected {LINE_FORMAT}: {err}") from None
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"non-finite box {fields[1:]}")
    x_min, y_min, x_max, y_max = box
    if not (x_max > x_min and y_max > y_min):
        raise ValueError(f"empty box: need x_max > x_min and y_max > y_min, got {fields[1:]}")
    return fields[0], (x_min, y_min, x_max, y_max)


def _check_unique(records: list[FaceRecord], where: Path) -> list[FaceRecord]:
    seen: dict[str, str] = {}
    for record in records:
        if record.name in seen:
            raise DataFormatError(
                f"{where}: {seen[record.name]} and {record.source} both get the crop name {record.name!r}; "
                "rename one of the images"
            )
        seen[record.name] = record.source
    return records


def read_folder(
    root: Path,
    *,
    images: str = ".",
    boxes: str | None = None,
    scale: float = 1.0,
    recursive: bool = False,
    bad: BadInput,
) -> list[FaceRecord]:
    """Unlabeled records of a folder of images (see the module docstring).

    Attributes: ``path`` (the image path relative to ``images``).
    """
    root = Path(root)
    image_dir = root / images
    if not image_dir.is_dir():
        raise MissingDownloadError(f"image folder not found: {image_dir}")
    if boxes is None:
        if float(scale) != 1.0:
            raise ValueError(f"folder: scale={scale} applies to boxes from a file; set boxes: or drop scale")
        relatives = list_images(image_dir, bool(recursive))
        if not relatives:
            raise MissingDownloadError(
                f"no images ({'/'.join(IMAGE_SUFFIXES)}) in {image_dir}"
                + ("" if recursive else " (set recursive: true to look into subfolders)")
            )
        rule = WholeImage()
        records = [
            FaceRecord(
                name=image_name(rel),
                image=FileImage(image_dir / rel, relative_key(image_dir / rel, root)),
                rule=rule,
                attributes={"path": rel},
                source=str(image_dir / rel),
            )
            for rel in relatives
        ]
        return _check_unique(records, image_dir)

    box_path = root / boxes
    if not box_path.is_file():
        raise MissingDownloadError(f"face-box file not found: {box_path}")
    entries: list[tuple[str, tuple[float, float, float, float], str]] = []
    for _, where, (rel, box) in parsed_lines(box_path, parse_box_line, bad, comment="#"):
        if not is_file(image_dir / rel):
            bad(f"{where}: image {image_dir / rel} not found (paths are relative to {image_dir})")
            continue
        entries.append((rel, box, where))
    per_image = Counter(rel for rel, _, _ in entries)
    seen: Counter[str] = Counter()
    rule = ScaledBox(float(scale))
    records = []
    for rel, box, where in entries:
        seen[rel] += 1
        name = image_name(rel) if per_image[rel] == 1 else f"{image_name(rel)}_{seen[rel]}"
        records.append(
            FaceRecord(
                name=name,
                image=FileImage(image_dir / rel, relative_key(image_dir / rel, root)),
                rule=rule,
                box=box,
                attributes={"path": rel},
                source=where,
            )
        )
    return _check_unique(records, box_path)
