"""Tiny raw downloads in each benchmark's exact on-disk format, rendered from the synthetic faces.

Each module writes one download as its publisher ships it (folder layout, file names, field counts, MATLAB
versions): ``w300`` (here), ``wflw``, ``cofw`` (COFW and COFW-68), ``aflw``, ``celeba``, ``table``. Tests
use them to check the readers against hand-computed values, and :func:`write_raw_downloads` lays out a
whole ``data.root`` so every experiment config can be smoke-run without the real datasets::

    python -m pipnet_lit.synthetic.raw --out /tmp/raw_data
    python -m pipnet_lit.train +experiment=wflw_r18 data.root=/tmp/raw_data model.pretrained=false +debug=fast
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipnet_lit.datasets.pts import write_pts
from pipnet_lit.synthetic.faces import render_face, sample_face_params

#: The 300W download's folders, with how many faces each gets in :func:`write_300w_tree` (per unit count).
W300_FOLDERS = ("afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug")


def write_300w_tree(root: Path, *, n_per_folder: int = 2, image_size: int = 96, seed: int = 0) -> Path:
    """Write ``root/300W/<folder>/<stem>.jpg|png`` + ``.pts`` (1-based pixels) for every 300W folder.

    lfpw images are ``.png`` as in the real download, the others ``.jpg``; ``ibug`` faces use the
    synthetic challenge style. Returns the ``300W`` folder.
    """
    base = Path(root) / "300W"
    for k, folder in enumerate(W300_FOLDERS):
        (base / folder).mkdir(parents=True, exist_ok=True)
        style = "challenge" if folder == "ibug" else "clean"
        ext = ".png" if folder.startswith("lfpw") else ".jpg"
        for i in range(n_per_folder):
            rng = np.random.default_rng([seed, k, i])
            image, landmarks = render_face(sample_face_params(rng, style, image_size))
            stem = base / folder / f"image_{k}{i:03d}"
            cv2.imwrite(str(stem) + ext, image)
            write_pts(stem.with_suffix(".pts"), landmarks + 0.5, decimals=3)
    return base


def write_raw_downloads(root: Path, *, n: int = 3, image_size: int = 96, seed: int = 0) -> dict[str, Path]:
    """Lay out a ``data.root`` with every download: 300W, WFLW, COFW, COFW68, AFLW and CelebA.

    ``n`` scales the face counts (kept tiny: these feed smoke runs). Returns dataset folder by name.
    """
    from pipnet_lit.synthetic.raw.aflw import write_aflw_tree
    from pipnet_lit.synthetic.raw.celeba import write_celeba_tree
    from pipnet_lit.synthetic.raw.cofw import write_cofw68_tree, write_cofw_tree
    from pipnet_lit.synthetic.raw.wflw import write_wflw_tree

    root = Path(root)
    out = {"300W": write_300w_tree(root, n_per_folder=n, image_size=image_size, seed=seed)}
    out["WFLW"] = root / "WFLW"
    write_wflw_tree(out["WFLW"], n_train=2 * n, n_test=2 * n, image_size=image_size, seed=seed)
    out["COFW"] = Path(
        write_cofw_tree(root, n_train=2 * n, n_test=n, image_size=image_size, seed=seed)["dir"]
    )
    out["COFW68"] = Path(write_cofw68_tree(root, n_test=n, image_size=image_size, seed=seed)["dir"])
    out["AFLW"] = Path(write_aflw_tree(root, n_faces=3 * n, image_size=image_size, seed=seed)["dir"])
    out["CelebA"] = Path(write_celeba_tree(root, n_images=2 * n, image_size=image_size, seed=seed)["dir"])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipnet_lit.synthetic.raw",
        description="Write tiny synthetic copies of every benchmark's raw download (for smoke runs).",
    )
    parser.add_argument("--out", type=Path, required=True, help="the data.root to fill")
    parser.add_argument("-n", type=int, default=3, help="scale of the face counts (default 3)")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, folder in write_raw_downloads(args.out, n=args.n, image_size=args.size, seed=args.seed).items():
        print(f"{name:7s} {folder}")
