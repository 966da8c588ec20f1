"""A tiny WFLW download, written in the exact on-disk format (for tests and smoke runs).

Layout written under ``root`` (the dataset folder, e.g. ``data/WFLW``)::

    WFLW_images/<event folder>/<image>.jpg
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt   (207 fields)
    WFLW_annotations/list_98pt_test/list_98pt_test.txt                                      (197 fields)
    WFLW_annotations/list_98pt_test/list_98pt_test_{largepose,...,blur}.txt                (197 fields)

Faces are the synthetic 68-point faces (:mod:`pipnet_lit.synthetic.faces`) mapped to a plausible 98-point
WFLW layout (:func:`wflw98_from_ibug68`). Coordinates are written ``%.6f`` like the real lists, rectangles as
integers around the landmarks. Edge cases, by line position within a split (when the split is long enough):

- 0: the rectangle touches the top edge (``y_min = 0``, height a multiple of 10), where the GSSL top edge
  ``0 + h * (1.2 - 1) / 2`` lies just below an integer (a rounded ``0.1 * h`` would crop one row lower);
- 1: the image is cut on the left/top, so landmarks and the rectangle reach negative coordinates;
- 2: a grayscale JPEG;
- 3: the image is cut on the right/bottom, so landmarks lie beyond the width / height;
- 4 and 5: two faces side by side in one image (two lines with the same path).

Every subset has at least one test face (flag ``j`` is set on test line ``j % n_test``); the subset files
list the test lines whose flag is 1, with the same coordinate strings as the test list.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipnet_lit.synthetic import render_face, sample_face_params

__all__ = ["SUBSET_FLAGS", "TEST_LIST", "TRAIN_LIST", "wflw98_from_ibug68", "write_wflw_tree"]

TRAIN_LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt"
TEST_LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt"
SUBSET_DIR = "WFLW_annotations/list_98pt_test"
# subset file suffix -> attribute flag it lists (flag order of the 207-field lines)
SUBSET_FLAGS = {
    "largepose": "pose",
    "expression": "expression",
    "illumination": "illumination",
    "makeup": "makeup",
    "occlusion": "occlusion",
    "blur": "blur",
}
FLAG_NAMES = tuple(SUBSET_FLAGS.values())
EVENTS = ("0--Parade", "12--Group", "51--Dresses")


def _interpolation_matrix() -> np.ndarray:
    """(98, 68) weights: each WFLW point as a combination of iBUG points."""
    m = np.zeros((98, 68))
    rows = np.arange(17)
    m[2 * rows, rows] = 1.0  # jaw: 33 points, every other one an iBUG jaw point ...
    m[2 * rows[:-1] + 1, rows[:-1]] = 0.5  # ... and midpoints between them
    m[2 * rows[:-1] + 1, rows[:-1] + 1] = 0.5
    copies = {
        33: 17, 34: 18, 35: 19, 36: 20, 37: 21, 38: 21, 39: 20, 40: 19, 41: 18,  # right brow, upper + lower
        42: 22, 43: 23, 44: 24, 45: 25, 46: 26, 47: 25, 48: 24, 49: 23, 50: 22,  # left brow
        60: 36, 61: 37, 63: 38, 64: 39, 65: 40, 67: 41,  # right eye
        68: 42, 69: 43, 71: 44, 72: 45, 73: 46, 75: 47,  # left eye
    }  # fmt: skip
    copies.update({51 + k: 27 + k for k in range(9)})  # nose bridge + nostrils
    copies.update({76 + k: 48 + k for k in range(20)})  # lips
    m[list(copies), list(copies.values())] = 1.0
    for row, (a, b) in {62: (37, 38), 66: (40, 41), 70: (43, 44), 74: (46, 47)}.items():
        m[row, [a, b]] = 0.5  # eyelid midpoints
    m[96, 36:42] = 1 / 6  # pupils: eye centres
    m[97, 42:48] = 1 / 6
    return m


_IBUG_TO_WFLW = _interpolation_matrix()
_BROW_UPPER = np.array([34, 35, 36, 37, 42, 43, 44, 45])
_BROW_LOWER = np.array([38, 39, 40, 41, 47, 48, 49, 50])


def wflw98_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (98, 2) plausible WFLW landmarks (brows get an upper and a lower contour)."""
    pts = _IBUG_TO_WFLW @ np.asarray(points68, dtype=np.float64)
    thickness = 0.03 * float(np.ptp(points68[:17, 0]))
    pts[_BROW_UPPER, 1] -= thickness
    pts[_BROW_LOWER, 1] += thickness
    return pts


def _render(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) BGR image and (98, 2) landmarks in 0-based pixel-centre coordinates."""
    image, points68 = render_face(sample_face_params(rng, "clean", image_size))
    return image, wflw98_from_ibug68(points68) - 0.5


def _rect(rng: np.random.Generator, points: np.ndarray) -> list[int]:
    """Integer detector-like rectangle around the landmarks (a few pixels of slack)."""
    pad = rng.integers(0, 4, size=4)
    lo = np.floor(points.min(axis=0)).astype(int)
    hi = np.ceil(points.max(axis=0)).astype(int)
    return [int(lo[0] - pad[0]), int(lo[1] - pad[1]), int(hi[0] + pad[2]), int(hi[1] + pad[3])]


def _faces_of_split(split: str, n: int, image_size: int, seed: int) -> list[dict]:
    """The faces of one split: image pixels (or None when shared with the previous face) and annotations."""
    split_id = 0 if split == "train" else 1
    faces: list[dict] = []
    for k in range(n):
        rng = np.random.default_rng([seed, split_id, k])
        if k == 5 and faces[4]["case"] == "shared_image":
            continue  # written with face 4
        image, points = _render(rng, image_size)
        case = "plain"
        if k == 1:  # cut left/top: the origin moves inside the face
            cut = np.floor(points.min(axis=0)).astype(int) + 3
            image, points, case = image[cut[1] :, cut[0] :], points - cut, "cut_top_left"
        elif k == 2:
            image, case = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), "grayscale"
        elif k == 3:  # cut right/bottom: the far edges move inside the face
            keep = np.ceil(points.max(axis=0)).astype(int) - 3
            image, case = image[: keep[1], : keep[0]], "cut_bottom_right"
        elif k == 4 and n > 5:  # a second face to the right, in the same image
            image_b, points_b = _render(np.random.default_rng([seed, split_id, 5]), image_size)
            image, case = np.hstack([image, image_b]), "shared_image"
            points_b = points_b + [image_size, 0]
        rect = _rect(rng, points)
        if k == 0:  # top edge on row 0, height a multiple of 10
            rect[3] = max(10, int(round(rect[3] / 10)) * 10)
            rect[1] = 0
        event = EVENTS[k % len(EVENTS)]
        number, name = event.split("--")
        path = f"{event}/{number}_{name}_{name.lower()}_{split}_{seed}_{k}.jpg"
        flags = {flag: int(rng.random() < 0.3) for flag in FLAG_NAMES}
        faces.append(dict(case=case, image=path, pixels=image, points=points, rect=rect, flags=flags))
        if case == "shared_image":
            rect_b = _rect(rng, points_b)
            flags_b = {flag: int(rng.random() < 0.3) for flag in FLAG_NAMES}
            faces.append(
                dict(case=case, image=path, pixels=None, points=points_b, rect=rect_b, flags=flags_b)
            )
    if split == "test":
        for j, flag in enumerate(FLAG_NAMES):
            if n:
                faces[j % n]["flags"][flag] = 1
    return faces


def _coords(points: np.ndarray) -> list[str]:
    return [f"{v:.6f}" for v in points.reshape(-1)]


def write_wflw_tree(root: Path, *, n_train: int, n_test: int, image_size: int = 96, seed: int = 0) -> dict:
    """Write a WFLW download with ``n_train`` / ``n_test`` annotated faces under ``root``.

    Returns a dict: ``root``; ``train_file`` / ``test_file`` and ``subset_files`` (name -> path), relative
    to ``root``; ``train`` / ``test``: per line (file order) a dict with ``image`` (path under
    ``WFLW_images``), ``points`` (98, 2) float64 as written (``%.6f`` parsed back), ``rect`` (4 ints),
    ``flags`` (name -> 0/1), ``case`` (see the module docstring); ``subsets``: name -> 0-based test lines.
    """
    root = Path(root)
    out: dict = {"root": root, "train_file": TRAIN_LIST, "test_file": TEST_LIST}
    out["subset_files"] = {name: f"{SUBSET_DIR}/list_98pt_test_{name}.txt" for name in SUBSET_FLAGS}
    subset_lines: list[str] = []  # the test faces as 197-field lines
    for split, n, list_file in (("train", n_train, TRAIN_LIST), ("test", n_test, TEST_LIST)):
        lines, entries = [], []
        for face in _faces_of_split(split, n, image_size, seed):
            if face["pixels"] is not None:
                image_path = root / "WFLW_images" / face["image"]
                image_path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(image_path), face["pixels"], [cv2.IMWRITE_JPEG_QUALITY, 95])
            coords = _coords(face["points"])
            flags = [str(face["flags"][flag]) for flag in FLAG_NAMES]
            lines.append(" ".join([*coords, *map(str, face["rect"]), *flags, face["image"]]))
            if split == "test":
                subset_lines.append(" ".join([*coords, face["image"]]))
            entries.append(
                dict(
                    image=face["image"],
                    points=np.array(coords, dtype=np.float64).reshape(98, 2),
                    rect=tuple(face["rect"]),
                    flags=face["flags"],
                    case=face["case"],
                )
            )
        path = root / list_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        out[split] = entries
    subset_dir = root / SUBSET_DIR
    subset_dir.mkdir(parents=True, exist_ok=True)
    (subset_dir / "list_98pt_test.txt").write_text("".join(line + "\n" for line in subset_lines))
    out["subsets"] = {}
    for name, flag in SUBSET_FLAGS.items():
        members = [i for i, entry in enumerate(out["test"]) if entry["flags"][flag] == 1]
        (root / out["subset_files"][name]).write_text("".join(subset_lines[i] + "\n" for i in members))
        out["subsets"][name] = members
    return out
