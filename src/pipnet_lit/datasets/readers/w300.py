"""300W on disk (also the synthetic faces and any folder of images + iBUG ``.pts``).

Layout: folders (``afw``, ``helen/trainset``, ...) of images (``.jpg``/``.jpeg``/``.png``, any case) next to
``.pts`` files of the same stem. Crop names are the official ``<folder with '/' -> '_'>_<image stem>``
(``afw_134212_1``, ``helen_testset_296814969_3``).

The box is the official ``process_300w`` rule (:func:`~pipnet_lit.datasets.geometry.box_from_points_300w`):
``.pts`` values truncated with ``int(float(x))``, min/max box enlarged by ``scale`` (1.1 supervised, 1.3 in
the self-training sets) with the official truncations, clamped. Official quirk kept as the default: the
normalized landmarks are the *truncated* coordinates over the integer box; ``subpixel: true`` normalizes
the float coordinates instead (same box and pixels; not the paper's protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.geometry import CropBox, box_from_points_300w, crop_and_resize, normalize_points
from pipnet_lit.datasets.pts import PtsFormatError, read_pts
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FaceRecord,
    FileImage,
    MissingDownloadError,
    relative_key,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Box300W:
    """Box from the landmarks (official 300W rule); see the module docstring."""

    scale: float = 1.1
    subpixel: bool = False

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        if points is None:
            raise ValueError("the 300W box rule needs landmarks (it boxes the .pts points)")
        crop_box = box_from_points_300w(points, image_w, image_h, self.scale)
        src = points if self.subpixel else np.trunc(points)
        return crop_box, normalize_points(src, crop_box)


def crop_name(folder: str, image_path: Path) -> str:
    """Official crop name stem: ``helen/testset`` + ``1.jpg`` -> ``helen_testset_1``."""
    return folder.strip("/").replace("/", "_") + "_" + image_path.stem


def list_pts_folder(root: Path, folder: str, bad: BadInput) -> list[tuple[Path, Path]]:
    """Images of one folder, each paired with the ``.pts`` of the same stem, sorted by image file name."""
    directory = root / folder
    if not directory.is_dir():
        raise MissingDownloadError(f"folder not found: {directory}")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for entry in directory.iterdir():
        if not entry.is_file():
            continue
        suffix = entry.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            if entry.stem in images:
                raise DataFormatError(
                    f"two images share the stem {entry.stem!r}: {images[entry.stem]} and {entry}; the "
                    f"{entry.stem}.pts landmarks could belong to either, so keep one of them"
                )
            images[entry.stem] = entry
        elif suffix == ".pts":
            labels[entry.stem] = entry
    for stem in sorted(s for s in images if s not in labels):
        bad(f"image {images[stem]} has no landmark file {images[stem].with_suffix('.pts').name} next to it")
    for stem in sorted(s for s in labels if s not in images):
        bad(f"landmark file {labels[stem]} has no image of the same stem (.jpg/.jpeg/.png)")
    pairs = [(images[s], labels[s]) for s in sorted(images, key=lambda s: images[s].name) if s in labels]
    if not pairs and not images:
        raise MissingDownloadError(f"no images (.jpg/.jpeg/.png) in folder {directory}")
    return pairs


def read_300w(
    root: Path,
    *,
    folders: Sequence[str],
    scale: float = 1.1,
    subpixel: bool = False,
    bad: BadInput,
) -> list[FaceRecord]:
    """Records of the given folders (in the given order, images sorted by name within each folder).

    Attributes: ``folder`` (as given in ``folders``).
    """
    if not folders:
        raise ValueError("the 300w format needs 'folders:' (a list of folders under the dataset root)")
    rule = Box300W(float(scale), bool(subpixel))
    records = []
    for folder in folders:
        for image_path, pts_path in list_pts_folder(root, folder, bad):
            try:
                points = read_pts(pts_path)
            except PtsFormatError as err:
                bad(str(err))
                continue
            records.append(
                FaceRecord(
                    name=crop_name(folder, image_path),
                    image=FileImage(image_path, relative_key(image_path, root)),
                    rule=rule,
                    points=points,
                    attributes={"folder": folder},
                    source=str(pts_path),
                )
            )
    return records


def crop_300w(
    image_bgr: np.ndarray, points: np.ndarray, input_size: int, scale: float = 1.1, subpixel: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """The official 300W crop of one face (what the cache stores for it).

    Args:
        image_bgr: (H, W, 3) uint8 BGR image.
        points: (L, 2) landmarks as read from the ``.pts`` (1-based pixels, used as is).

    Returns:
        crop (input_size, input_size, 3) uint8; landmarks (L, 2) float64 normalized to the box, not
        clipped; box ``(xmin, ymin, w, h)`` in pixels (ints).
    """
    h, w = image_bgr.shape[:2]
    box, landmarks = Box300W(scale, subpixel).apply(np.asarray(points, dtype=np.float64), None, w, h)
    crop = crop_and_resize(image_bgr, box.check(), input_size)
    return crop, landmarks, tuple(int(v) for v in box.xywh())
