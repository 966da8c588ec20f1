"""Render synthetic 68-landmark faces in the 300W on-disk format (image + .pts per face).

    python -m pipnet_lit.synthetic --out data/synthetic --n-train 2000 --size 128 --seed 0

Writes the folders trainset/ common/ challenge/ wild/ (and wild_test/ with --n-wild-test) under --out, and
``synthetic.json``, the manifest: nothing is redone when it already matches (--force redoes it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipnet_lit.cli import Command, option
from pipnet_lit.synthetic.faces import SPLIT_STYLES, generate_dataset


@dataclass(kw_only=True)
class SynthOptions:
    """The command line of ``python -m pipnet_lit.synthetic`` (`COMMAND`)."""

    out: Path = option(help="output root (folders trainset/ common/ challenge/ wild/)")
    n_train: int = option(2000, help="clean training images")
    n_common: int = option(300, help="clean test images")
    n_challenge: int = option(100, help="hard-pose/occluded test images")
    n_wild: int = option(500, help="second-style pool images")
    n_wild_test: int = option(0, help="labeled second-style test images, folder wild_test")
    size: int = option(128, help="square image side in pixels")
    seed: int = option(0, help="random seed")
    face_fraction: tuple[float, float] = option(
        (0.4, 0.7), metavar="LOW HIGH", help="landmark box side / image side, uniform in [LOW, HIGH]"
    )
    format: Literal["png", "jpg"] = option("png", help="png (lossless) or jpg (q95)")
    force: bool = option(False, help="regenerate even if the manifest matches")
    progress: bool = option(True, help="show a progress bar (--no-progress hides it)")


COMMAND = Command(SynthOptions, prog="python -m pipnet_lit.synthetic", doc=__doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns its exit code (0 written, 2 bad options)."""
    opts = COMMAND.parse_or_exit(argv)
    start = time.perf_counter()
    try:
        counts = generate_dataset(
            opts.out,
            n_train=opts.n_train,
            n_common=opts.n_common,
            n_challenge=opts.n_challenge,
            n_wild=opts.n_wild,
            n_wild_test=opts.n_wild_test,
            image_size=opts.size,
            seed=opts.seed,
            face_fraction=opts.face_fraction,
            image_format=opts.format,
            progress=opts.progress,
            force=opts.force,
        )
    except ValueError as err:
        print(f"{COMMAND.prog}: error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    for split, n in counts.items():
        print(
            f"{opts.out}/{split}: {n} images ({SPLIT_STYLES[split]} style, {opts.size}px {opts.format}, .pts)"
        )
    print(f"manifest: {opts.out}/synthetic.json ({elapsed:.1f} s; nothing is redone if it already matched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
