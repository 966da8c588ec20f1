"""A tiny CelebA unlabeled pool: ``CelebA/img_celeba/000001.jpg ...`` and ``CelebA/celeba_bboxes.txt``.

``celeba_bboxes.txt`` holds lines ``000001.jpg x_min y_min x_max y_max`` (integers, a detector-like box
from the forehead to the chin) in a shuffled order, so readers must keep the file order. Every fourth
image (from the third) has no line; every fifth (from the fourth) has a box past the image's left and
bottom edges; every third (from the second) is a grayscale JPEG; widths and heights vary.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from pipnet_lit.synthetic import render_face, sample_face_params

BOX_FILE = "celeba_bboxes.txt"
IMAGE_FOLDER = "img_celeba"


def write_celeba_tree(root: Path, *, n_images: int, image_size: int = 96, seed: int = 0) -> dict:
    """Write ``root/CelebA`` and return what was written.

    Returns: ``dir`` (the CelebA folder), ``bbox_file`` (its path), ``images`` (every image file name),
    ``listed`` (the names with a line, in file order), ``boxes`` (file name -> (x_min, y_min, x_max, y_max)),
    ``sizes`` (file name -> (width, height)).
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    folder = Path(root) / "CelebA"
    (folder / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    images: list[str] = []
    boxes: dict[str, tuple[int, int, int, int]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        image, ibug = render_face(sample_face_params(rng, "clean", image_size))
        image = cv2.copyMakeBorder(image, 0, 10 * (i % 3), 0, 6 * (i % 2), cv2.BORDER_REPLICATE)
        height, width = image.shape[:2]
        name = f"{i + 1:06d}.jpg"
        if i % 3 == 1:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(folder / IMAGE_FOLDER / name), image, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        images.append(name)
        sizes[name] = (width, height)
        if i % 4 == 2:
            continue
        low, high = ibug.min(axis=0), ibug.max(axis=0)
        box = [
            math.floor(low[0]),
            math.floor(low[1] - 0.25 * (high[1] - low[1])),
            math.ceil(high[0]),
            math.ceil(high[1]),
        ]
        if i % 5 == 3:
            box[0], box[3] = -4, height + 3
        boxes[name] = (box[0], box[1], box[2], box[3])
    listed = [images[k] for k in np.random.default_rng(seed).permutation(len(images)) if images[k] in boxes]
    lines = [f"{name} {' '.join(str(v) for v in boxes[name])}\n" for name in listed]
    (folder / BOX_FILE).write_text("".join(lines))
    return {
        "dir": folder,
        "bbox_file": folder / BOX_FILE,
        "images": images,
        "listed": listed,
        "boxes": boxes,
        "sizes": sizes,
    }
