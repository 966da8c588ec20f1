"""CLI: ``python -m pipnet_lit.synthetic --out data/synthetic --n-train 2000 --size 128 --seed 0``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from pipnet_lit.synthetic.faces import SPLIT_STYLES, generate_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipnet_lit.synthetic",
        description="Render synthetic 68-landmark faces in the 300W on-disk format (image + .pts per face).",
    )
    parser.add_argument(
        "--out", required=True, help="output root (folders trainset/ common/ challenge/ wild/)"
    )
    parser.add_argument("--n-train", type=int, default=2000, help="clean training images (default 2000)")
    parser.add_argument("--n-common", type=int, default=300, help="clean test images (default 300)")
    parser.add_argument(
        "--n-challenge", type=int, default=100, help="hard-pose/occluded test images (default 100)"
    )
    parser.add_argument("--n-wild", type=int, default=500, help="second-style pool images (default 500)")
    parser.add_argument(
        "--n-wild-test",
        type=int,
        default=0,
        help="labeled second-style test images, folder wild_test (default 0)",
    )
    parser.add_argument("--size", type=int, default=128, help="square image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--face-fraction",
        type=float,
        nargs=2,
        default=(0.4, 0.7),
        metavar=("LOW", "HIGH"),
        help="landmark box side / image side, uniform in [LOW, HIGH] (default 0.4 0.7)",
    )
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="png (lossless) or jpg (q95)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        counts = generate_dataset(
            args.out,
            n_train=args.n_train,
            n_common=args.n_common,
            n_challenge=args.n_challenge,
            n_wild=args.n_wild,
            n_wild_test=args.n_wild_test,
            image_size=args.size,
            seed=args.seed,
            face_fraction=tuple(args.face_fraction),
            image_format=args.format,
            progress=not args.no_progress,
            force=args.force,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    for split, n in counts.items():
        print(
            f"{args.out}/{split}: {n} images ({SPLIT_STYLES[split]} style, {args.size}px {args.format}, .pts)"
        )
    print(f"manifest: {args.out}/synthetic.json ({elapsed:.1f} s; nothing is redone if it already matched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
