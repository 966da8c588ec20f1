"""A tiny AFLW-19 download: ``AFLW/flickr/<0|2|3>/image*.jpg`` and ``AFLW/AFLWinfo_release.mat``.

The ``.mat`` file has the release's variables and shapes (MATLAB v5, ``scipy.io.savemat``): ``bbox``
N x 4 ``[x_min x_max y_min y_max]``, ``data`` N x 38 (19 x, then 19 y), ``nameList`` N x 1 cell of char
paths under ``flickr/``, ``ra`` 1 x N (a 1-based permutation) and ``mask_new`` N x 19 (1 visible, 0 not),
all double (the release's class for ``ra`` is not documented; the reader takes any integral class).

Faces are the synthetic renderer's (68 iBUG points mapped to AFLW's 19). Images are not square (heights
vary) so a width/height mix-up shows; every fourth image is grayscale; every fourth face (from the third)
has its box and two landmarks outside the image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io

from pipnet_lit.synthetic import render_face, sample_face_params

IMAGE_FOLDERS = ("0", "2", "3")
MAT_NAME = "AFLWinfo_release.mat"


def _aflw_from_ibug() -> np.ndarray:
    """(19, 68) weights: AFLW-19 point k = weights[k] @ iBUG-68 points (picks and midpoints)."""
    sources = [
        [17], [19], [21], [22], [24], [26],  # brows: outer corner, centre, inner corner (x2)
        [36], list(range(36, 42)), [39], [42], list(range(42, 48)), [45],  # eyes: corner, centre, corner
        [31], [30], [35],  # nostril, tip, nostril
        [48], [51, 57], [54],  # mouth corner, centre, corner
        [8],  # chin
    ]  # fmt: skip
    weights = np.zeros((19, 68))
    for k, idx in enumerate(sources):
        weights[k, idx] = 1.0 / len(idx)
    return weights


AFLW_FROM_IBUG = _aflw_from_ibug()


def write_aflw_tree(root: Path, *, n_faces: int, image_size: int = 96, seed: int = 0) -> dict:
    """Write ``root/AFLW`` and return what was written.

    Returns: ``dir`` (the AFLW folder), ``mat`` (the .mat path), ``names`` (N paths under ``flickr/``),
    ``points`` (N, 19, 2) float64 and ``bbox`` (N, 4) float64 as stored, ``ra`` (N,) int 1-based,
    ``mask`` (N, 19), ``sizes`` (N, 2) image (width, height).
    """
    if n_faces < 1:
        raise ValueError(f"n_faces must be >= 1, got {n_faces}")
    folder = Path(root) / "AFLW"
    for sub in IMAGE_FOLDERS:
        (folder / "flickr" / sub).mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    points = np.zeros((n_faces, 19, 2))
    boxes = np.zeros((n_faces, 4))
    mask = np.ones((n_faces, 19))
    sizes = np.zeros((n_faces, 2), dtype=np.int64)
    for i in range(n_faces):
        rng = np.random.default_rng([seed, i])
        image, ibug = render_face(sample_face_params(rng, "clean", image_size))
        extra = 8 * (i % 3)
        if extra:
            image = cv2.copyMakeBorder(image, 0, extra, 0, 0, cv2.BORDER_REPLICATE)
        height, width = image.shape[:2]
        pts = AFLW_FROM_IBUG @ ibug
        low, high = pts.min(axis=0), pts.max(axis=0)
        centre = (low + high) / 2 + rng.uniform(-0.05, 0.05, 2) * (high - low).max()
        half = (high - low).max() * rng.uniform(0.55, 0.7)
        x_min, x_max, y_min, y_max = np.round(
            [centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half], 2
        )
        if i % 4 == 2:  # box and landmarks beyond the image: the official clamps and clips apply
            x_min, y_max = -3.25, height + 2.5
            pts[0, 0], pts[18, 1] = -1.5, height + 1.75
        if i % 3 == 0:
            mask[i, int(rng.integers(19))] = 0.0
        name = f"{IMAGE_FOLDERS[i % 3]}/image{i + 1:05d}.jpg"
        if i % 4 == 1:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(folder / "flickr" / name), image, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        names.append(name)
        points[i] = pts
        boxes[i] = (x_min, x_max, y_min, y_max)
        sizes[i] = (width, height)
    ra = np.random.default_rng(seed).permutation(n_faces) + 1
    name_cells = np.empty((n_faces, 1), dtype=object)
    name_cells[:, 0] = names
    scipy.io.savemat(
        folder / MAT_NAME,
        {
            "bbox": boxes,
            "data": np.concatenate([points[:, :, 0], points[:, :, 1]], axis=1),
            "nameList": name_cells,
            "ra": ra.astype(np.float64)[None, :],
            "mask_new": mask,
        },
        format="5",
    )
    return {
        "dir": folder,
        "mat": folder / MAT_NAME,
        "names": names,
        "points": points,
        "bbox": boxes,
        "ra": ra,
        "mask": mask,
        "sizes": sizes,
    }
