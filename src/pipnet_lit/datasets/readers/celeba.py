"""CelebA as an unlabeled pool (the PIPNet GSSL setting ``data_300W_CELEBA``).

Layout (``dir: CelebA``): ``img_celeba/000001.jpg ...`` (the in-the-wild CelebA images) and
``celeba_bboxes.txt``, the face boxes the PIPNet authors distribute with their GSSL data: one line per
face, ``<image file name> x_min y_min x_max y_max`` (integers, inclusive pixel bounds). Images without a
line are not used; records follow the file's order. Crop names are the image stems (``000001``).

The box rule is the official ``process_celeba`` (``lib/preprocess_uda.py``): ``w = x_max - x_min + 1``
(likewise ``h``); the sides move out by ``w * (scale - 1) / 2``, the bottom down by
``h * (scale - 1) / 2``, and the top edge moves **down** (into the face) by
``h * (scale + top_trim - 1) / 2`` (scale 1.2, top_trim 0.1: 0.15000000000000002 h); then the box is
clamped to ``[0, W - 1] x [0, H - 1]`` and the crop takes ``int()`` bounds. No landmarks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.geometry import CropBox, clamp_box, expand_box, margin
from pipnet_lit.datasets.records import (
    BadInput,
    FaceRecord,
    FileImage,
    MissingDownloadError,
    is_file,
    parsed_lines,
    relative_key,
)

LINE_FORMAT = "'<image name> x_min y_min x_max y_max' (integers)"


@dataclass(frozen=True)
class BoxCelebA:
    """The official CelebA crop (module docstring); ``box`` is the line's ``(x_min, y_min, x_max, y_max)``."""

    scale: float = 1.2
    top_trim: float = 0.1

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        assert box is not None, "the CelebA rule needs a box"
        x_min, y_min, x_max, y_max = box
        width = x_max - x_min + 1
        height = y_max - y_min + 1
        side = margin(width, self.scale)
        x0, y0, x1, y1 = expand_box(
            x_min,
            y_min,
            x_max,
            y_max,
            left=side,
            top=-margin(height, self.scale + self.top_trim),  # negative: the top edge moves down
            right=side,
            bottom=margin(height, self.scale),
        )
        return clamp_box(x0, y0, x1, y1, image_w, image_h), None


def parse_box_line(fields: list[str]) -> tuple[str, tuple[int, int, int, int]]:
    """``['000001.jpg', '95', '71', '226', '313']`` -> (name, box); ValueError when malformed."""
    if len(fields) != 5:
        raise ValueError(f"expected {LINE_FORMAT}, got {len(fields)} fields")
    try:
        x_min, y_min, x_max, y_max = (int(v) for v in fields[1:])
    except ValueError as err:
        raise ValueError(f"expected {LINE_FORMAT}: {err}") from None
    if x_max < x_min or y_max < y_min:
        raise ValueError(f"empty box: x_max < x_min or y_max < y_min in {fields[1:]}")
    return fields[0], (x_min, y_min, x_max, y_max)


def read_celeba(
    root: Path,
    *,
    bbox_file: str = "celeba_bboxes.txt",
    images: str = "img_celeba",
    scale: float = 1.2,
    top_trim: float = 0.1,
    bad: BadInput,
) -> list[FaceRecord]:
    """One unlabeled record per line of ``bbox_file`` whose image exists, in file order.

    Attributes: ``image`` (the file name as the line gives it).
    """
    root = Path(root)
    box_path = root / bbox_file
    if not box_path.is_file():
        raise MissingDownloadError(f"CelebA face-box file not found: {box_path}")
    image_dir = root / images
    if not image_dir.is_dir():
        raise MissingDownloadError(f"CelebA image folder not found: {image_dir}")
    present = set(os.listdir(image_dir))  # one listing instead of 200k stat calls

    rule = BoxCelebA(float(scale), float(top_trim))
    records: list[FaceRecord] = []
    first_line: dict[str, int] = {}
    for line_no, where, (image_name, box) in parsed_lines(box_path, parse_box_line, bad):
        name = Path(image_name).stem
        if name in first_line:
            bad(
                f"{where}: a second box for {image_name} (first on line {first_line[name]}); "
                "one face per image"
            )
            continue
        if image_name not in present and not is_file(image_dir / image_name):
            bad(f"{where}: image {image_dir / image_name} not found (is {images}/ complete?)")
            continue
        first_line[name] = line_no
        image_path = image_dir / image_name
        records.append(
            FaceRecord(
                name=name,
                image=FileImage(image_path, relative_key(image_path, root)),
                rule=rule,
                points=None,
                box=box,
                attributes={"image": image_name},
                source=where,
            )
        )
    return records
