"""COFW (29 points, MATLAB v7.3 files) and COFW-68 (the COFW test images with 68-point annotations).

COFW on disk (Caltech, "COFW"): ``COFW_train_color.mat`` (variables ``IsTr``, ``bboxesTr``, ``phisTr``) and
``COFW_test_color.mat`` (``IsT``, ``bboxesT``, ``phisT``), both MATLAB v7.3 (HDF5). ``Is*`` is an N x 1
cell of RGB (H x W x 3) or gray (H x W) uint8 images, ``bboxes*`` N x 4 ``[x y w h]``, ``phis*`` N x 87:
29 x, 29 y, 29 occlusion flags. Crop names ``cofw_<part>_%04d`` of the 1-based entry index (1345 train,
507 test).

COFW-68 (Ghiasi & Fowlkes): the 507 COFW test images, ``cofw68_test_bboxes.mat`` (``bboxes``: N x 4
``[x y w h]``, int16) and ``cofw68_test_annotations/<i>_points.mat`` (``Points`` 68 x 2 x, y; ``Occ``
unused), i 1-based; the small files are read in either MATLAB version. Names ``cofw_test_%04d``.

Official crops (:class:`CofwBox`): ``x_max = x + w - 1`` (same for y) in the box's own dtype; with a
``scale``, each side moves out by ``w * (scale - 1) / 2`` (``h`` for y); clamp to ``[0, W - 1] x [0, H - 1]``;
crop with ``int()`` bounds; landmarks ``(p - x_min) / (x_max - x_min)``, never clipped. COFW supervised:
no scale (``lib/preprocess.py``); the self-training sets (``lib/preprocess_uda.py``): scale 1.3 for the
unlabeled COFW train crops and for COFW-68.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.geometry import CropBox, clamp_box, expand_box, margin, normalize_points
from pipnet_lit.datasets.readers.matlab import MatCellImage, load_mat, load_mat_v73, mat_v73_cell_shapes
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FaceRecord,
    MissingDownloadError,
    relative_key,
)

__all__ = ["COFW_KEYS", "NUM_COFW_LANDMARKS", "CofwBox", "inclusive_corners", "read_cofw", "read_cofw68"]

NUM_COFW_LANDMARKS = 29
NUM_COFW68_LANDMARKS = 68
# part -> (images, boxes, landmarks) variable names
COFW_KEYS = {"train": ("IsTr", "bboxesTr", "phisTr"), "test": ("IsT", "bboxesT", "phisT")}


def inclusive_corners(x, y, w, h):
    """COFW's ``[x y w h]`` -> ``(x, y, x + w - 1, y + h - 1)``, in the inputs' own (numpy) arithmetic."""
    return x, y, x + w - 1, y + h - 1


def _python_scalar(value):
    """numpy scalar -> the Python int / float of the same value (exact); Python numbers pass through."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class CofwBox:
    """Official COFW / COFW-68 box from ``[x y w h]`` (see the module docstring).

    ``scale=None``: no enlargement (supervised COFW). ``box_dtype``: the dtype the box numbers have in the
    file (``float64`` for COFW's doubles, ``int16`` for COFW-68): ``x + w - 1`` is computed in it, as the
    official code does on the arrays it loads; the enlargement then turns the edges into float64.
    """

    scale: float | None = None
    box_dtype: str = "float64"

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        assert box is not None, "the COFW rule needs the [x y w h] box"
        x, y, w, h = np.asarray(box, dtype=self.box_dtype)
        x0, y0, x1, y1 = inclusive_corners(x, y, w, h)
        if self.scale is not None:
            dx, dy = margin(w, self.scale), margin(h, self.scale)
            x0, y0, x1, y1 = expand_box(x0, y0, x1, y1, dx, dy, dx, dy)
        x0, y0, x1, y1 = (_python_scalar(v) for v in (x0, y0, x1, y1))
        crop_box = clamp_box(x0, y0, x1, y1, int(image_w), int(image_h))
        return crop_box, None if points is None else normalize_points(points, crop_box)


def _image_shape_problem(shape: tuple[int, ...]) -> str:
    """Why a cell element of this MATLAB shape is not a gray / RGB image ('' when it is one)."""
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3)):
        if shape[0] > 0 and shape[1] > 0:
            return ""
    return f"the image has shape {shape}, expected H x W (gray) or H x W x 3 (RGB)"


def _box_problem(box: np.ndarray) -> str:
    """Why a ``[x y w h]`` row is unusable ('' when it is fine)."""
    if box.shape != (4,) or not np.isfinite(box.astype(np.float64)).all():
        return f"the box {box.tolist()} is not 4 finite numbers [x y w h]"
    if box[2] <= 0 or box[3] <= 0:
        return f"the box {box.tolist()} has a non-positive width or height"
    return ""


def _crop_problem(rule: CofwBox, box: tuple, shape: tuple[int, ...], source: str) -> str:
    """Why the rule's crop would be empty on an image of this shape ('' when it is not)."""
    try:
        rule.apply(None, box, shape[1], shape[0])[0].check(source)
    except ValueError as err:
        return str(err)
    return ""


def _dataset_file(root: Path, relative: str | Path, what: str) -> Path:
    path = Path(os.path.normpath(Path(root) / relative))
    if not path.is_file():
        raise MissingDownloadError(f"{what} not found: {path} (looked for {relative!s} under {root})")
    return path


def _numeric_matrix(value, path: Path, key: str, columns: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataFormatError(
            f"{path}: {key} must be a numeric matrix, got {array.dtype} of shape {array.shape}"
        )
    if columns is not None and array.shape[1] < columns:
        raise DataFormatError(f"{path}: {key} has {array.shape[1]} columns, expected at least {columns}")
    return array


def read_cofw(
    root: Path,
    *,
    mat: str,
    part: str,
    scale: float | None = None,
    unlabeled: bool = False,
    bad: BadInput,
) -> list[FaceRecord]:
    """Records of one COFW ``.mat`` file (images are read lazily, one cell entry at a time).

    Args:
        root: the COFW folder.
        mat: the file under ``root`` (``COFW_train_color.mat`` / ``COFW_test_color.mat``).
        part: ``train`` or ``test``: picks the variable names and the crop names ``cofw_<part>_%04d``.
        scale: None for the official supervised crop; 1.3 for the self-training COFW-train crop.
        unlabeled: drop the landmarks (``points=None``) and the occlusion attributes.

    Attributes: ``index`` (1-based entry), and when labeled ``occluded`` (number of occluded landmarks)
    and ``occlusion`` (29 0/1 flags).
    """
    if part not in COFW_KEYS:
        raise ValueError(f"cofw format: part must be one of {sorted(COFW_KEYS)}, got {part!r}")
    image_key, box_key, phis_key = COFW_KEYS[part]
    path = _dataset_file(root, mat, "COFW file")
    data = load_mat_v73(path, (box_key, phis_key), dataset="COFW")
    shapes = mat_v73_cell_shapes(path, image_key, dataset="COFW")
    boxes = _numeric_matrix(data[box_key], path, box_key, 4)[:, :4]
    phis = _numeric_matrix(data[phis_key], path, phis_key, 2 * NUM_COFW_LANDMARKS).astype(np.float64)
    if not len(shapes) == len(boxes) == len(phis):
        raise DataFormatError(
            f"{path}: {image_key} has {len(shapes)} entries, {box_key} {len(boxes)} rows, {phis_key} "
            f"{len(phis)} rows; they must match (one face per entry)"
        )
    n = NUM_COFW_LANDMARKS
    points_all = np.stack([phis[:, :n], phis[:, n : 2 * n]], axis=2)  # (N, 29, 2)
    flags_all = phis[:, 2 * n : 3 * n]  # (N, 29) or (N, 0) when the file has no occlusion columns
    rule = CofwBox(None if scale is None else float(scale), str(boxes.dtype))
    key = relative_key(path, Path(root))
    records = []
    for i, (shape, box_row, points, flags) in enumerate(
        zip(shapes, boxes, points_all, flags_all, strict=True)
    ):
        source = f"{path}[{i + 1}]"
        where = f"{path}: entry {i + 1} ({image_key}{{{i + 1}}}, {box_key}({i + 1},:), {phis_key}({i + 1},:))"
        box = tuple(_python_scalar(v) for v in box_row)
        problem = (
            _image_shape_problem(shape)
            or _box_problem(box_row)
            or ("" if unlabeled or np.isfinite(points).all() else "the landmarks contain NaN or inf")
            or _crop_problem(rule, box, shape, source)
        )
        if problem:
            bad(f"{where}: {problem}; fix or remove this entry")
            continue
        attributes: dict = {"index": i + 1}
        if not unlabeled and flags.size:
            occlusion = tuple(int(v) for v in np.asarray(flags != 0, dtype=np.int64))
            attributes.update(occluded=int(sum(occlusion)), occlusion=occlusion)
        records.append(
            FaceRecord(
                name=f"cofw_{part}_{i + 1:04d}",
                image=MatCellImage(path, image_key, i, key),
                rule=rule,
                points=None if unlabeled else points.copy(),
                box=box,
                attributes=attributes,
                source=source,
            )
        )
    return records


def _read_cofw68_points(path: Path) -> tuple[np.ndarray | None, str]:
    """(68, 2) float64 ``Points`` of one COFW-68 annotation file (either MATLAB version), or why not."""
    if not path.is_file():
        return None, "the annotation file is missing"
    try:
        points = np.asarray(load_mat(path, ("Points",), dataset="COFW-68")["Points"])
    except DataFormatError as err:
        return None, str(err)
    if points.shape != (NUM_COFW68_LANDMARKS, 2) or not np.issubdtype(points.dtype, np.number):
        return None, f"Points has shape {points.shape} ({points.dtype}), expected 68 x 2 numbers"
    if not np.isfinite(points).all():
        return None, "Points contains NaN or inf"
    return points.astype(np.float64), ""


def read_cofw68(
    root: Path,
    *,
    images_mat: str,
    bboxes_mat: str,
    annotations_dir: str,
    scale: float = 1.3,
    bad: BadInput,
) -> list[FaceRecord]:
    """Records of the COFW-68 test set: COFW test images, COFW-68 boxes and 68-point annotations.

    Args:
        root: the COFW-68 folder.
        images_mat: the COFW test file, relative to ``root`` (``../COFW/COFW_test_color.mat``).
        bboxes_mat: ``cofw68_test_bboxes.mat`` (variable ``bboxes``, N x 4 ``[x y w h]``).
        annotations_dir: folder of ``<i>_points.mat`` (variable ``Points``, 68 x 2), i 1-based.
        scale: the official 1.3 enlargement.

    Attributes: ``index`` (1-based entry).
    """
    root = Path(root)
    images_path = _dataset_file(root, images_mat, "COFW test file (COFW-68 uses its images)")
    bboxes_path = _dataset_file(root, bboxes_mat, "COFW-68 box file")
    annotations = Path(os.path.normpath(root / annotations_dir))
    if not annotations.is_dir():
        raise MissingDownloadError(f"COFW-68 annotation folder not found: {annotations}")
    image_key = COFW_KEYS["test"][0]
    shapes = mat_v73_cell_shapes(images_path, image_key, dataset="COFW")
    raw_boxes = load_mat(bboxes_path, ("bboxes",), dataset="COFW-68")["bboxes"]
    boxes = _numeric_matrix(raw_boxes, bboxes_path, "bboxes", 4)[:, :4]
    if len(boxes) != len(shapes):
        raise DataFormatError(
            f"{bboxes_path}: {len(boxes)} boxes for the {len(shapes)} images of {images_path}; "
            "they must match (one box per image)"
        )
    rule = CofwBox(float(scale), str(boxes.dtype))
    key = relative_key(images_path, root)
    records = []
    for i, (shape, box_row) in enumerate(zip(shapes, boxes, strict=True)):
        points_path = annotations / f"{i + 1}_points.mat"
        source = f"{points_path}"
        where = f"{points_path} (entry {i + 1}, {bboxes_path.name} row {i + 1})"
        box = tuple(_python_scalar(v) for v in box_row)
        problem = (
            _image_shape_problem(shape) or _box_problem(box_row) or _crop_problem(rule, box, shape, source)
        )
        points, problem = (None, problem) if problem else _read_cofw68_points(points_path)
        if problem:
            bad(f"{where}: {problem}; fix or remove this entry")
            continue
        records.append(
            FaceRecord(
                name=f"cofw_test_{i + 1:04d}",
                image=MatCellImage(images_path, image_key, i, key),
                rule=rule,
                points=points,
                box=box,
                attributes={"index": i + 1},
                source=source,
            )
        )
    return records
