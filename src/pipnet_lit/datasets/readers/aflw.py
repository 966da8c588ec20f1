"""AFLW-19 on disk: the AFLW ``flickr/`` images and the ``AFLWinfo_release.mat`` of the CFSS protocol.

Layout (``dir: AFLW``): ``flickr/{0,2,3}/image*.jpg`` (the AFLW download) and ``AFLWinfo_release.mat``
(MATLAB v5, Zhu et al.'s AFLW-19 annotations), with one row per face (N = 24386 in the release):

- ``bbox`` (N, 4): the face box ``[x_min x_max y_min y_max]`` in source pixels;
- ``data`` (N, 38): the 19 x coordinates, then the 19 y coordinates;
- ``nameList`` (N, 1) cell: the image path under ``flickr/`` (``3/image00035.jpg``);
- ``ra`` (1, N): a 1-based permutation of the faces; the first ``split_point`` (20000) are the training
  faces, the rest the test faces, both in ``ra``'s order;
- ``mask_new`` (N, 19): per-landmark visibility (1 visible). The official PIPNet code loads it and never
  uses it; we expose ``all_visible`` (every one of the 19 landmarks visible, the test faces' "frontal"
  definition of FaRL's AFLW-19 loader) as an attribute only, so no subset uses it by default.

Crop names are the official ``aflw_<part>_%05d`` of the 1-based face index (the ``ra`` value).

The box rule is the official ``process_aflw``: landmarks clipped to ``[0, W] x [0, H]``; the given box
clamped to ``[0, W - 1] x [0, H - 1]`` with no enlargement; the crop takes ``int()`` bounds and the
landmarks are normalized by the float box, ``(p - x_min) / (x_max - x_min)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.geometry import CropBox, clamp_box, clip_points, normalize_points
from pipnet_lit.datasets.readers.matlab import load_mat_v5
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FaceRecord,
    FileImage,
    MissingDownloadError,
    is_file,
    relative_key,
)

NUM_LANDMARKS = 19
PARTS = ("train", "test")
MAT_KEYS = ("bbox", "data", "nameList", "ra", "mask_new")  # the official code loads all five


@dataclass(frozen=True)
class BoxAFLW:
    """The official AFLW rule: the file's box clamped to the image, no enlargement; see the module docstring.

    ``box`` is the file's ``(x_min, x_max, y_min, y_max)``; ``points`` the raw (19, 2) landmarks.
    """

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        assert points is not None and box is not None, "the AFLW rule needs landmarks and a box"
        x_min, x_max, y_min, y_max = box
        crop_box = clamp_box(x_min, y_min, x_max, y_max, image_w, image_h)
        return crop_box, normalize_points(clip_points(points, image_w, image_h), crop_box)


def crop_name(part: str, face_index: int) -> str:
    """Official crop name stem: ``aflw_train_00005`` for the 1-based face index 5."""
    return f"aflw_{part}_{face_index:05d}"


def _cell_string(entry: object) -> str | None:
    """The text of one ``nameList`` cell (``str``, or a char array nested in arrays), or None."""
    while isinstance(entry, np.ndarray):
        if entry.size != 1:
            return None
        entry = entry.reshape(-1)[0]
    return str(entry) if isinstance(entry, str) and entry.strip() else None


def _permutation(ra: np.ndarray, num_faces: int, mat_path: Path) -> np.ndarray:
    """``ra`` as a (K,) int64 array of distinct 1-based face indices (any numeric class, 1 x K or K x 1)."""
    arr = np.asarray(ra)
    if arr.ndim != 2 or min(arr.shape) != 1 or not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(f"{mat_path}: 'ra' must be a 1 x N numeric vector, got {arr.dtype} {arr.shape}")
    flat = arr.reshape(-1)
    values = flat.astype(np.float64)
    bad_pos = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)) | (values < 1))
    bad_pos = np.union1d(bad_pos, np.flatnonzero(values > num_faces))
    if bad_pos.size:
        j = int(bad_pos[0])
        raise DataFormatError(
            f"{mat_path}: ra({j + 1}) = {flat[j].item()!r} is not a face index in 1..{num_faces} "
            f"({bad_pos.size} such entries); the file is damaged"
        )
    indices = values.astype(np.int64)
    unique, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise DataFormatError(
            f"{mat_path}: ra repeats face {int(unique[counts > 1][0])}; it must be a permutation "
            "(a repeated face would sit in both train and test)"
        )
    return indices


def read_aflw(
    root: Path,
    *,
    mat: str = "AFLWinfo_release.mat",
    part: str,
    split_point: int = 20000,
    bad: BadInput,
) -> list[FaceRecord]:
    """Records of one part (``train`` = ``ra[:split_point]``, ``test`` = the rest), in ``ra``'s order.

    Attributes: ``index`` (1-based face index), ``image`` (path under ``flickr/``), ``all_visible`` (all 19
    landmarks marked visible in ``mask_new``; not an official subset).
    """
    root = Path(root)
    if part not in PARTS:
        raise ValueError(f"aflw: part must be one of {PARTS}, got {part!r}")
    mat_path = root / mat
    if not mat_path.is_file():
        raise MissingDownloadError(f"AFLW annotation file not found: {mat_path}")
    image_dir = root / "flickr"
    if not image_dir.is_dir():
        raise MissingDownloadError(f"AFLW image folder not found: {image_dir}")

    arrays = load_mat_v5(mat_path, MAT_KEYS, dataset="AFLW-19")
    boxes = np.asarray(arrays["bbox"])
    num_faces = boxes.shape[0] if boxes.ndim == 2 else -1
    expected = {"bbox": (num_faces, 4), "data": (num_faces, 2 * NUM_LANDMARKS), "mask_new": (num_faces, 19)}
    for key, shape in expected.items():
        value = np.asarray(arrays[key])
        if value.shape != shape or not np.issubdtype(value.dtype, np.number):
            raise DataFormatError(
                f"{mat_path}: '{key}' must be a numeric N x {shape[1]} matrix with one row per face "
                f"(N = {num_faces} rows in 'bbox'), got {value.dtype} {value.shape}"
            )
    names = arrays["nameList"]  # a cell array: a list of its entries (a char matrix: a list of rows)
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != num_faces:
        raise DataFormatError(f"{mat_path}: 'nameList' has {len(names)} entries, 'bbox' {num_faces} rows")
    ra = _permutation(arrays["ra"], num_faces, mat_path)
    if not 0 <= int(split_point) <= len(ra):
        raise DataFormatError(
            f"{mat_path}: split_point={split_point} is outside 0..{len(ra)} (the length of its 'ra'); is "
            "this the AFLW-19 release file, and the split point the protocol's?"
        )

    boxes = boxes.astype(np.float64)
    data = np.asarray(arrays["data"], dtype=np.float64)
    points = data.reshape(num_faces, 2, NUM_LANDMARKS).transpose(0, 2, 1)  # (N, 19, 2): x row, then y row
    finite = np.isfinite(data).all(axis=1) & np.isfinite(boxes).all(axis=1)
    positive = (boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])
    all_visible = (np.asarray(arrays["mask_new"]) == 1).all(axis=1)

    chosen = ra[: int(split_point)] if part == "train" else ra[int(split_point) :]
    rule = BoxAFLW()
    image_exists: dict[str, bool] = {}
    records = []
    for face_index in chosen.tolist():
        row = face_index - 1
        where = f"{mat_path}: face {face_index} (row {face_index} of bbox/data/nameList)"
        image_name = _cell_string(names[row])
        if image_name is None:
            bad(f"{where}: nameList{{{face_index}}} is not an image path: {names[row]!r}")
            continue
        if not finite[row]:
            bad(f"{where}: 'data' or 'bbox' holds NaN or inf; fix the row or skip the face")
            continue
        if not positive[row]:
            bad(f"{where}: empty box [x_min x_max y_min y_max] = {boxes[row].tolist()}")
            continue
        image_path = image_dir / image_name
        if image_name not in image_exists:
            image_exists[image_name] = is_file(image_path)
        if not image_exists[image_name]:
            bad(f"{where}: image {image_path} not found (is the AFLW flickr/ folder complete?)")
            continue
        attributes = {"index": face_index, "image": image_name, "all_visible": bool(all_visible[row])}
        records.append(
            FaceRecord(
                name=crop_name(part, face_index),
                image=FileImage(image_path, relative_key(image_path, root)),
                rule=rule,
                points=points[row].copy(),
                box=tuple(float(v) for v in boxes[row]),
                attributes=attributes,
                source=where,
            )
        )
    return records
