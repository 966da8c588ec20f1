"""The documented custom-data example (``docs/custom_data.md``), written with synthetic faces.

:func:`write_table_example` writes a dataset folder in the ``table`` format: ``images/0001.png ...``, one
table (``faces.csv`` or ``faces.jsonl``) with five landmarks per face (eye centres, nose tip, mouth corners),
a face box and a ``split`` column, and the two YAML files the documentation shows (``face5.yaml``, the
landmark scheme; ``mydata.yaml``, the dataset description), byte for byte when the folder is called
``mydata``. CLI: ``python -m pipnet_lit.synthetic.raw.table /path/to/data/mydata``.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipnet_lit.datasets.readers.table import BOX_COLUMNS
from pipnet_lit.synthetic import render_face, sample_face_params

__all__ = ["DATASET_YAML", "SCHEME_YAML", "five_points", "write_table_example", "write_table_tree"]

# The landmark scheme exactly as docs/custom_data.md shows it.
SCHEME_YAML = """\
# Five facial landmarks: eye centres, nose tip, mouth corners. 0-based; "right" is the subject's right.
name: face5
num_landmarks: 5
groups:                      # inclusive index ranges
  eyes: [0, 1]               # 0: right eye centre (on the image's left), 1: left eye centre
  nose: [2, 2]               # 2: nose tip
  mouth: [3, 4]              # 3: right mouth corner (on the image's left), 4: left mouth corner
# Landmark k of a horizontally flipped face is landmark flip_permutation[k] of the original.
flip_permutation: [1, 0, 2, 4, 3]
# NME normalizations: name -> the two index groups whose centres are measured.
norms:
  inter_ocular: [[0], [1]]   # eye centre to eye centre
"""

# The dataset description exactly as docs/custom_data.md shows it (for dir=mydata, table=faces.csv).
DATASET_YAML = """\
# My faces: five landmarks per face in one table whose "split" column says train or test.
name: mydata
landmarks: face5.yaml        # a built-in scheme (ibug68) or a path relative to this file's folder
format: table
# The folder under data.root that holds the table and the images:
dir: {dir}
download: my own photos, five points clicked on each face
layout: {table} (image, x0, y0, ..., x4, y4, box_x0, box_y0, box_x1, box_y1, split) and images/
metrics:                     # the first one is the primary metric
  nme_io: inter_ocular       # error / distance between the eye centres (the scheme's norms)
  nme_box: box_diag          # error / diagonal of the crop box
splits:                      # reader arguments: file, where, scale (default 1.1), box_from (default auto)
  train: {{file: {table}, where: {{split: train}}}}
  test: {{file: {table}, where: {{split: test}}}}
train: train
test:
  test: test
"""

SCHEME_FILE = "face5.yaml"
DATASET_FILE = "mydata.yaml"
TABLE_STEM = "faces"


def five_points(landmarks_68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2): right / left eye centre, nose tip, right / left mouth corner."""
    pts = np.asarray(landmarks_68, dtype=np.float64)
    return np.stack([pts[36:42].mean(axis=0), pts[42:48].mean(axis=0), pts[30], pts[48], pts[54]])


def two_decimals(values: np.ndarray) -> np.ndarray:
    """Values as the table writes them: the floats of their two-decimal text (any shape)."""
    return np.char.mod("%.2f", np.asarray(values, dtype=np.float64)).astype(np.float64)


def write_table_example(
    root: Path,
    *,
    n_train: int = 6,
    n_test: int = 3,
    num_landmarks: int = 5,
    image_size: int = 96,
    seed: int = 0,
    fmt: str = "csv",
) -> dict[str, Any]:
    """Write the documented example into the dataset folder ``root`` (``data.root`` is ``root.parent``).

    Faces ``1..n_train`` are ``split: train``, the next ``n_test`` are ``split: test``. Values are written
    with two decimals, and the returned truth holds them as written.

    Returns:
        ``root``, ``data_root``, ``table``, ``meta`` (``mydata.yaml``), ``scheme`` (``face5.yaml``) paths and
        ``faces``: one dict per row with ``name``, ``image`` (relative path), ``split``, ``landmarks`` (5, 2)
        and ``box`` (x0, y0, x1, y1), in file order.
    """
    if num_landmarks != 5:
        raise ValueError(f"write_table_example writes the documented 5-point scheme; got {num_landmarks=}")
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"write_table_example: fmt must be 'csv' or 'jsonl', got {fmt!r}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    faces = []
    for index in range(n_train + n_test):
        image, landmarks_68 = render_face(sample_face_params(rng, "clean", image_size))
        relative = f"images/{index + 1:04d}.png"
        if not cv2.imwrite(str(root / relative), image):
            raise OSError(f"could not write {root / relative}")
        box = np.concatenate([landmarks_68.min(axis=0), landmarks_68.max(axis=0)])
        faces.append(
            {
                "name": f"images_{index + 1:04d}",
                "image": relative,
                "split": "train" if index < n_train else "test",
                "landmarks": two_decimals(five_points(landmarks_68)),
                "box": tuple(two_decimals(box).tolist()),
            }
        )

    table = root / f"{TABLE_STEM}.{fmt}"
    if fmt == "csv":
        header = ["image", *(f"{axis}{k}" for k in range(5) for axis in "xy"), *BOX_COLUMNS]
        with table.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*header, "split"])
            for face in faces:
                numbers = [*face["landmarks"].reshape(-1), *face["box"]]
                writer.writerow([face["image"], *np.char.mod("%.2f", numbers), face["split"]])
    else:
        with table.open("w", encoding="utf-8") as handle:
            for face in faces:
                entry = {
                    "image": face["image"],
                    "landmarks": face["landmarks"].tolist(),
                    "box": list(face["box"]),
                    "split": face["split"],
                }
                handle.write(json.dumps(entry) + "\n")

    (root / SCHEME_FILE).write_text(SCHEME_YAML, encoding="utf-8")
    meta_text = DATASET_YAML.format(dir=root.name, table=table.name)
    (root / DATASET_FILE).write_text(meta_text, encoding="utf-8")
    return {
        "root": root,
        "data_root": root.parent,
        "table": table,
        "meta": root / DATASET_FILE,
        "scheme": root / SCHEME_FILE,
        "faces": faces,
    }


def write_table_tree(
    root: Path, *, n_train: int, n_test: int, image_size: int = 96, seed: int = 0, **kw: Any
):
    """The ``write_<fmt>_tree`` entry point of the raw-format generators: :func:`write_table_example`."""
    return write_table_example(root, n_train=n_train, n_test=n_test, image_size=image_size, seed=seed, **kw)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipnet_lit.synthetic.raw.table",
        description="Write the custom-data example of docs/custom_data.md (table + images + two YAML files).",
    )
    parser.add_argument("root", type=Path, help="the dataset folder to write, e.g. /path/to/data/mydata")
    parser.add_argument("--n-train", type=int, default=6)
    parser.add_argument("--n-test", type=int, default=3)
    parser.add_argument("--size", type=int, default=96, help="square image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmt", choices=("csv", "jsonl"), default="csv")
    args = parser.parse_args(argv)
    out = write_table_example(
        args.root,
        n_train=args.n_train,
        n_test=args.n_test,
        image_size=args.size,
        seed=args.seed,
        fmt=args.fmt,
    )
    print(f"wrote {len(out['faces'])} faces to {out['root']}; train with:")
    print(
        f"  python -m pipnet_lit.train data=custom data.meta={out['meta']} data.root={out['data_root']} "
        "model.num_nb=4"
    )


if __name__ == "__main__":
    main()
