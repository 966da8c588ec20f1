"""Synthetic COFW and COFW-68 downloads, written in the exact on-disk format of the real files.

``write_cofw_tree`` writes ``COFW/COFW_train_color.mat`` and ``COFW/COFW_test_color.mat`` as MATLAB v7.3
files (HDF5 with the 512-byte ``MATLAB 7.3 MAT-file`` user block, column-major arrays, cell arrays as
object references into ``#refs#``, ``MATLAB_class`` attributes): ``Is*`` N x 1 cells of RGB / gray uint8
images, ``bboxes*`` N x 4 double ``[x y w h]``, ``phis*`` N x 87 double (29 x, 29 y, 29 occlusion flags).
``write_cofw68_tree`` writes ``COFW68/cofw68_test_bboxes.mat`` (v5, ``bboxes`` int16 N x 4) and
``COFW68/cofw68_test_annotations/<i>_points.mat`` (v5, ``Points`` 68 x 2 double, ``Occ`` 68 x 1) for the
same test faces.

Faces come from :func:`pipnet_lit.synthetic.render_face`; the 29 COFW points are picked / averaged from
its 68 iBUG points (:data:`COFW29_FROM_IBUG68`). Coordinates are 1-based pixel centres
(continuous + 0.5), as MATLAB annotations are. Every entry is a pure function of ``(seed, part, index)``;
entry ``i`` (0-based) gets an edge case by ``i % 5``: 0 a fractional box, 1 a gray image, 2 the image cut
on the left (landmarks and the box start outside it), 3 a box past the right and bottom edges, 4 a box
whose 1.3 enlargement lands an ``int()`` edge on a float-rounding boundary (integer ``x``, ``w`` a multiple
of 20: ``x - w * (1.3 - 1) / 2`` is just below an integer, where ``w * 0.15`` would give the integer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipnet_lit.synthetic import render_face, sample_face_params

__all__ = ["COFW29_FROM_IBUG68", "write_cofw68_tree", "write_cofw_tree", "write_mat_v73"]

_PART_CODES = {"train": 1, "test": 2}
_COFW_KEYS = {"train": ("IsTr", "bboxesTr", "phisTr"), "test": ("IsT", "bboxesT", "phisT")}
_MATLAB_CLASSES = {
    "float64": "double", "float32": "single", "uint8": "uint8", "int8": "int8", "uint16": "uint16",
    "int16": "int16", "uint32": "uint32", "int32": "int32", "uint64": "uint64", "int64": "int64",
}  # fmt: skip


def _cofw29_weights() -> np.ndarray:
    """(29, 68) weights: COFW point k = weights[k] @ iBUG points (image-left member of each pair first)."""
    picks: list[dict[int, float]] = [
        {17: 1}, {26: 1}, {21: 1}, {22: 1},  # brow outer / inner corners
        {19: 1}, {19: 0.7, 37: 0.3}, {24: 1}, {24: 0.7, 44: 0.3},  # brow top, brow bottom
        {36: 1}, {45: 1}, {39: 1}, {42: 1},  # eye outer / inner corners
        {37: 0.5, 38: 0.5}, {40: 0.5, 41: 0.5}, {43: 0.5, 44: 0.5}, {46: 0.5, 47: 0.5},  # eyelids
        {k: 1 / 6 for k in range(36, 42)}, {k: 1 / 6 for k in range(42, 48)},  # pupils
        {31: 1}, {35: 1}, {30: 1}, {33: 1},  # nostrils, nose tip, nose bottom
        {48: 1}, {54: 1}, {51: 1}, {62: 1}, {66: 1}, {57: 1},  # mouth corners, lip midline top to bottom
        {8: 1},  # chin
    ]  # fmt: skip
    weights = np.zeros((len(picks), 68))
    for row, pick in enumerate(picks):
        weights[row, list(pick)] = list(pick.values())
    return weights


#: (29, 68) map from the renderer's iBUG points to COFW's 29 (pairs follow the official flip order).
COFW29_FROM_IBUG68 = _cofw29_weights()


# ---------------------------------------------------------------------------------------------------------
# MATLAB v7.3 writer


def _matlab_header(text: str) -> bytes:
    """The 512-byte user block of a v7.3 file: 116 bytes of text, 8 zero bytes, version 0x0200, 'IM'."""
    head = text.encode("ascii")[:116].ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return head.ljust(512, b"\x00")


def _ref_name(counter: int) -> str:
    """MATLAB's names in ``#refs#``: a, b, ..., z, ba, bb, ... (base 26 with letters)."""
    name = ""
    while True:
        name = chr(ord("a") + counter % 26) + name
        counter //= 26
        if counter == 0:
            return name


def _write_value(group, name: str, value: Any, refs, counter: list[int]):
    """Write one MATLAB value column-major as dataset ``name`` of ``group``; cells recurse into ``refs``."""
    import h5py

    if isinstance(value, list):  # cell array, N x 1
        ref_array = np.empty((1, len(value)), dtype=h5py.ref_dtype)
        for i, item in enumerate(value):
            ref_name = _ref_name(counter[0])
            counter[0] += 1
            ref_array[0, i] = _write_value(refs, ref_name, item, refs, counter).ref
        dataset = group.create_dataset(name, data=ref_array)
        dataset.attrs["MATLAB_class"] = np.bytes_("cell")
        return dataset
    if isinstance(value, str):  # char row vector
        codes = np.array([[ord(c)] for c in value], dtype=np.uint16)  # MATLAB 1 x n -> HDF5 n x 1
        dataset = group.create_dataset(name, data=codes)
        dataset.attrs["MATLAB_class"] = np.bytes_("char")
        dataset.attrs["MATLAB_int_decode"] = np.int32(2)
        return dataset
    array = np.asarray(value)
    if array.ndim < 2:
        array = array.reshape(1, -1)  # MATLAB has no 1-D arrays: a row vector
    if array.dtype == bool:
        dataset = group.create_dataset(name, data=array.T.astype(np.uint8))
        dataset.attrs["MATLAB_class"] = np.bytes_("logical")
        dataset.attrs["MATLAB_int_decode"] = np.int32(1)
        return dataset
    if array.dtype.name not in _MATLAB_CLASSES:
        raise TypeError(f"write_mat_v73: no MATLAB class for dtype {array.dtype} (variable {name!r})")
    dataset = group.create_dataset(name, data=np.ascontiguousarray(array.T))
    dataset.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASSES[array.dtype.name])
    return dataset


def write_mat_v73(path: Path, variables: dict[str, Any]) -> Path:
    """Write ``variables`` as a MATLAB v7.3 file (what ``save(path, ..., '-v7.3')`` writes).

    Values: numeric / bool numpy arrays in MATLAB shape (1-D -> row vector), ``str`` (char row), or lists
    (N x 1 cell arrays of such values).
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512, track_order=True) as file:
        refs = file.create_group("#refs#")
        counter = [0]
        for name, value in variables.items():
            _write_value(file, name, value, refs, counter)
    created = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0))
    header = _matlab_header(
        f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    )
    with open(path, "r+b") as f:
        f.write(header)
    return path


# ---------------------------------------------------------------------------------------------------------
# Faces


def _render(seed: int, part: str, index: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) RGB or (H, W) gray uint8 image and (68, 2) 1-based landmarks of entry ``index``."""
    rng = np.random.default_rng([seed, _PART_CODES[part], index])
    image_bgr, continuous = render_face(sample_face_params(rng, "clean", image_size))
    points = continuous + 0.5
    case = index % 5
    if case == 2:  # cut the left part of the face off the image: landmarks (and the box) start outside
        cut = int(points[:, 0].min() + 0.3 * np.ptp(points[:, 0]))
        image_bgr = image_bgr[:, cut:]
        points = points - np.array([cut, 0.0])
    if case == 1:
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), points
    return np.ascontiguousarray(image_bgr[:, :, ::-1]), points


def _rounding_boundary_edge(side: float, near: float) -> float:
    """The integer ``x`` nearest ``near`` where ``int(x - side * (1.3 - 1) / 2)`` (official, > 0) differs from
    ``int(x - side * 0.15)`` (a rounded literal); ``side`` a multiple of 20 makes ``side * 0.15`` whole."""
    candidates = np.arange(1.0, 4 * side + 2)
    official = candidates - side * (1.3 - 1) / 2
    boundary = (np.trunc(official) != np.trunc(candidates - side * 0.15)) & (official > 0)
    if not boundary.any():
        raise AssertionError(f"no rounding boundary for a box side of {side}")
    hits = candidates[boundary]
    return float(hits[np.argmin(np.abs(hits - near))])


def _box(points: np.ndarray, index: int, image_w: int, image_h: int) -> np.ndarray:
    """``[x y w h]`` around (L, 2) landmarks, with the edge case of entry ``index`` (module docstring)."""
    low, high = points.min(axis=0), points.max(axis=0)
    size = high - low
    case = index % 5
    if case == 0:  # fractional detector box
        return np.array([*(low - 0.05 * size + 0.25), *(1.1 * size)])
    if case == 3:  # runs past the right and bottom edges
        x, y = np.floor(low)
        return np.array([x, y, image_w - x + 7, image_h - y + 5])
    if case == 4:  # float-rounding boundary of the 1.3 enlargement (x, y > the margin, so no clamp)
        side = 20.0 * max(1, round(float(size.max()) / 20))
        x, y = (_rounding_boundary_edge(side, v) for v in np.floor(low))
        return np.array([x, y, side, side])
    x, y = np.floor(low)
    w, h = np.ceil(high) - np.array([x, y]) + 1
    return np.array([x, y, w, h])


def _write_cofw_part(directory: Path, part: str, n: int, image_size: int, seed: int) -> dict[str, Any]:
    images, boxes, phis = [], [], []
    for index in range(n):
        image, points68 = _render(seed, part, index, image_size)
        points = COFW29_FROM_IBUG68 @ points68  # (29, 2)
        flags = np.random.default_rng([seed, _PART_CODES[part], index, 29]).random(29) < 0.2
        images.append(image)
        boxes.append(_box(points, index, image.shape[1], image.shape[0]))
        phis.append(np.concatenate([points[:, 0], points[:, 1], flags.astype(np.float64)]))
    image_key, box_key, phis_key = _COFW_KEYS[part]
    box_array, phis_array = np.array(boxes).reshape(n, 4), np.array(phis).reshape(n, 87)
    path = write_mat_v73(
        directory / f"COFW_{part}_color.mat", {image_key: images, box_key: box_array, phis_key: phis_array}
    )
    return {"mat": path, "images": images, "boxes": box_array, "phis": phis_array}


def write_cofw_tree(root: Path, *, n_train: int, n_test: int, image_size: int = 96, seed: int = 0) -> dict:
    """Write ``root/COFW`` as downloaded (see the module docstring).

    Returns:
        ``{"dir": Path, "train": part, "test": part}``, each part ``{"mat": Path, "images": [RGB or gray
        arrays as stored], "boxes": (N, 4) float64, "phis": (N, 87) float64}``.
    """
    directory = Path(root) / "COFW"
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "dir": directory,
        "train": _write_cofw_part(directory, "train", n_train, image_size, seed),
        "test": _write_cofw_part(directory, "test", n_test, image_size, seed),
    }


def write_cofw68_tree(root: Path, *, n_test: int, image_size: int = 96, seed: int = 0) -> dict:
    """Write ``root/COFW68`` (boxes and 68-point annotations of the COFW test faces).

    Also writes ``root/COFW/COFW_test_color.mat`` (the images) when it is missing; with the same
    ``n_test``, ``image_size`` and ``seed`` it holds the faces :func:`write_cofw_tree` writes.

    Returns:
        ``{"dir": Path, "images_mat": Path, "bboxes_mat": Path, "annotations_dir": Path,
        "points": (N, 68, 2) float64, "boxes": (N, 4) int16, "images": [arrays]}``.
    """
    import scipy.io

    root = Path(root)
    images_mat = root / "COFW" / "COFW_test_color.mat"
    if not images_mat.is_file():
        images_mat.parent.mkdir(parents=True, exist_ok=True)
        _write_cofw_part(images_mat.parent, "test", n_test, image_size, seed)
    directory = root / "COFW68"
    annotations = directory / "cofw68_test_annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    images, points_all, boxes = [], [], []
    for index in range(n_test):
        image, points = _render(seed, "test", index, image_size)
        occlusion = np.random.default_rng([seed, _PART_CODES["test"], index, 68]).random((68, 1)) < 0.2
        annotation = {"Points": points, "Occ": occlusion.astype(np.float64)}
        scipy.io.savemat(annotations / f"{index + 1}_points.mat", annotation)
        images.append(image)
        points_all.append(points)
        boxes.append(np.round(_box(points, index, image.shape[1], image.shape[0])))
    box_array = np.array(boxes).reshape(n_test, 4).astype(np.int16)
    bboxes_mat = directory / "cofw68_test_bboxes.mat"
    scipy.io.savemat(bboxes_mat, {"bboxes": box_array})
    return {
        "dir": directory,
        "images_mat": images_mat,
        "bboxes_mat": bboxes_mat,
        "annotations_dir": annotations,
        "points": np.array(points_all).reshape(n_test, 68, 2),
        "boxes": box_array,
        "images": images,
    }
