"""Data-pipeline benchmark: training samples per DataLoader worker, and prepare_data's cropping throughput.

Everything runs on synthetic faces in the 300W on-disk format (``pipnet_lit.synthetic``), rendered into a
temporary folder at ``--source-size`` px so that the crops are real resizes, then cropped to ``--size`` px by
the crop cache (``prepare_split``), exactly as ``prepare_data`` does it.

1. Training pipeline, per worker: ``CropDataset.__getitem__`` over the cached crops with the official training
   augmentation (``build_train_transform`` with the dataset's flip permutation): PNG decode, augmentation,
   normalization, tensor; plus ``encode_targets`` of that image (mean-face neighbours, grid size/stride).
   Measured in one process with one torch and one OpenCV thread: what one DataLoader worker does on one
   core (num_workers=0). Timed in CPU seconds of the process (``time.process_time``), so that other work
   on a shared machine does not count; the wall-clock rate of the headline is reported beside it (the two
   agree on an idle machine). Checked against the target of ``--target`` images/s per worker. The breakdown
   (decode, augmentation with each step's share, targets) shows which part is slow. Reported beside it:
   targets encoded per batch (what ``training_step`` does, in the main process), collating a batch (a
   worker's job too) and the eval pipeline's rate. Medians over ``--passes`` passes over all crops, after
   one warm-up pass; results are dropped as they come (keeping them would time fresh memory pages).
   Cropping (below) is multi-threaded and timed in wall-clock seconds, so it does feel other work.
2. Cropping (``prepare_split``): images/s with 1 thread and with every core (its ``workers`` argument), each
   a fresh cache build (median of ``--crop-repeats``), and the time of a second call (a cache hit).

Usage: python experiments/bench/bench_pipeline.py [--size 256] [--stride 32] [--faces 256]
       [--source-size 384] [--passes 5] [--quick] [--workdir DIR]
       [--out experiments/bench/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import torch
from torch.utils.data import default_collate

from pipnet_lit.datasets.cache import prepare_split, read_split
from pipnet_lit.datasets.dataset import CropDataset
from pipnet_lit.datasets.meta import load_dataset_meta
from pipnet_lit.datasets.readers import read_records
from pipnet_lit.datasets.records import BadInput
from pipnet_lit.datasets.transforms import LandmarkTransform, build_eval_transform, build_train_transform
from pipnet_lit.pip import build_neighbors, compute_meanface, encode_targets
from pipnet_lit.synthetic import generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import cpu_info, write_report  # noqa: E402  (a sibling script, not a package)

META = "synthetic"  # its YAML names the reader, the training split's folders and crop scale, the flips


def drain(items: Iterable[object]) -> None:
    """Run a generator, dropping each result at once (as a loader does after collating)."""
    deque(items, maxlen=0)


def per_pass(fn: Callable[[], object], n: int, passes: int, warmup: int = 1) -> float:
    """Median CPU seconds of this process per item of ``fn`` (one call = one pass over ``n`` items)."""
    return per_pass_both(fn, n, passes, warmup)[0]


def per_pass_both(fn: Callable[[], object], n: int, passes: int, warmup: int = 1) -> tuple[float, float]:
    """Median (CPU seconds, wall-clock seconds) per item of ``fn``."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(passes):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return statistics.median(cpu) / n, statistics.median(wall) / n


class Timed:
    """Stands in for a callable (an albumentations step, a Compose, a transform) and adds up the CPU time
    spent in it under ``name`` in ``totals``; other attributes are the wrapped object's."""

    def __init__(self, fn: Any, totals: dict[str, float], name: str):
        self.fn, self.totals, self.name = fn, totals, name
        totals.setdefault(name, 0.0)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        out = self.fn(*args, **kwargs)
        self.totals[self.name] += time.process_time() - start
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)


def breakdown_pass(
    dataset: CropDataset, step: Callable[[dict[str, Any]], object], passes: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The training loop of one worker, instrumented: CPU ms per image in each part, measured in place
    (parts timed alone run faster: interleaved with image work, the torch calls of the targets cost about
    twice as much). Returns (parts, augmentation steps); a step with p=0.5 counts half its cost."""
    transform: LandmarkTransform = dataset.transform  # type: ignore[assignment]
    compose = transform.compose
    steps = list(compose.transforms)
    totals: dict[str, float] = {}
    step_totals: dict[str, float] = {}
    compose.transforms = [Timed(t, step_totals, type(t).__name__) for t in steps]
    transform.compose = Timed(compose, totals, "compose")  # type: ignore[assignment]
    dataset.transform = Timed(transform, totals, "transform")
    timed_step = Timed(step, totals, "targets")
    getitem = Timed(dataset.__getitem__, totals, "getitem")
    try:
        for _ in range(passes):
            for i in range(len(dataset)):
                timed_step(getitem(i))
    finally:
        compose.transforms, transform.compose, dataset.transform = steps, compose, transform
    scale = 1000.0 / (passes * len(dataset))
    parts = {
        "decode": (totals["getitem"] - totals["transform"]) * scale,  # imread + CropDataset's own work
        "augmentation": totals["transform"] * scale,
        "targets": totals["targets"] * scale,
        "total": (totals["getitem"] + totals["targets"]) * scale,
    }
    detail = {name: t * scale for name, t in step_totals.items()}
    detail["compose_bookkeeping"] = (totals["compose"] - sum(step_totals.values())) * scale
    detail["wrapper"] = (totals["transform"] - totals["compose"]) * scale  # checks, BGR -> RGB, coordinates
    return parts, detail


def bench_training_pipeline(args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    meta = load_dataset_meta(META)
    split = read_split(cache_dir)
    n = len(split)
    neighbors = build_neighbors(compute_meanface(split.landmarks), args.num_nb)
    grid = (args.size // args.stride, args.size // args.stride)
    train_tf = build_train_transform(args.size, meta.landmarks.flip_permutation, seed=0)
    train_set = CropDataset(split.image_paths, split.landmarks, split.boxes, train_tf, names=split.names)
    eval_set = CropDataset(
        split.image_paths, split.landmarks, split.boxes, build_eval_transform(args.size), names=split.names
    )

    def targets(item: dict[str, Any]) -> object:
        return encode_targets(item["landmarks"][None], neighbors, grid)

    def full() -> None:
        drain(targets(train_set[i]) for i in range(n))

    full_s, full_wall_s = per_pass_both(full, n, args.passes)
    parts, steps = breakdown_pass(train_set, targets, args.passes)
    getitem_s = per_pass(lambda: drain(train_set[i] for i in range(n)), n, args.passes)
    batch = args.batch
    items = [train_set[i] for i in range(n)]
    landmarks = torch.stack([item["landmarks"] for item in items])
    batched_s = per_pass(
        lambda: drain(encode_targets(landmarks[i : i + batch], neighbors, grid) for i in range(0, n, batch)),
        n,
        args.passes,
    )
    collate_s = per_pass(
        lambda: drain(default_collate(items[i : i + batch]) for i in range(0, n, batch)), n, args.passes
    )
    eval_s = per_pass(lambda: drain(eval_set[i] for i in range(n)), n, args.passes)
    train_img_s = 1.0 / full_s
    return {
        "clock": "CPU time of the (one-thread) process; train_img_s_wall_clock is the wall-clock rate",
        "crops": n,
        "grid": list(grid),
        "train_img_s": train_img_s,
        "train_img_s_wall_clock": 1.0 / full_wall_s,
        "target_img_s": args.target,
        "pass": train_img_s >= args.target,
        "getitem_img_s": 1.0 / getitem_s,
        "breakdown_ms": parts,
        "augmentation_steps_ms": steps,
        "batch": batch,
        "targets_batched_ms_per_image": 1000 * batched_s,
        "collate_ms_per_image": 1000 * collate_s,
        "eval_img_s": 1.0 / eval_s,
    }


def bench_cropping(args: argparse.Namespace, records: list, work: Path) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"faces": len(records), "source_size": args.source_size, "cores": cores}
    for label, workers in (("img_s_1_thread", 1), ("img_s_all_cores", cores)):
        times = []
        for _ in range(args.crop_repeats):
            target = work / "cache"
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            prepare_split(records, target, args.size, workers=workers, progress=False)
            times.append(time.perf_counter() - start)
        out[label] = len(records) / statistics.median(times)
    hits = []
    for _ in range(5):
        start = time.perf_counter()
        prepare_split(records, work / "cache", args.size, workers=cores, progress=False)
        hits.append(time.perf_counter() - start)
    out["cache_hit_ms"] = 1000 * statistics.median(hits)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="network input (crop) size in pixels")
    parser.add_argument("--stride", type=int, default=32, help="network stride (grid = size / stride)")
    parser.add_argument("--num-nb", type=int, default=10, help="neighbours per landmark")
    parser.add_argument("--faces", type=int, default=256, help="synthetic faces to render and crop")
    parser.add_argument("--source-size", type=int, default=384, help="side of the rendered images")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the crops (median)")
    parser.add_argument("--crop-repeats", type=int, default=3, help="cache builds per setting (median)")
    parser.add_argument(
        "--batch", type=int, default=16, help="batch for the batched-targets and collate figures"
    )
    parser.add_argument("--target", type=float, default=300.0, help="images/s per worker to pass")
    parser.add_argument("--quick", action="store_true", help="a handful of faces, one pass (smoke test)")
    parser.add_argument("--workdir", default=None, help="folder for data and crops (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.faces, args.passes, args.crop_repeats, args.batch = 8, 1, 1, 4
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": cpu_info()
        | {"cores": os.cpu_count(), "opencv": cv2.__version__, "load_average_start": os.getloadavg()},
        "config": vars(args) | {"out": None, "workdir": None, "meta": META},
    }
    machine = report["machine"]
    print(
        f"CPU: {machine['cpu']}  flags: {' '.join(machine['flags']) or '-'}  cores: {machine['cores']}  "
        f"torch {torch.__version__}  opencv {cv2.__version__}  load average {os.getloadavg()[0]:.2f} "
        "(other work on the machine slows every figure)"
    )
    start = time.perf_counter()
    generate_dataset(
        work / "raw",
        n_train=args.faces,
        n_common=0,
        n_challenge=0,
        n_wild=0,
        image_size=args.source_size,
        seed=0,
        progress=False,
    )
    report["generate_s"] = time.perf_counter() - start
    meta = load_dataset_meta(META)
    spec = meta.splits[meta.train[0]]
    records = read_records(spec.format, work / "raw", bad=BadInput("raise"), **spec.args)

    report["prepare"] = crop = bench_cropping(args, records, work)
    print(
        f"prepare_split, {crop['faces']} faces {args.source_size}px -> {args.size}px crops: "
        f"{crop['img_s_1_thread']:.0f} img/s with 1 thread, {crop['img_s_all_cores']:.0f} img/s with "
        f"{crop['cores']} threads; cache hit {crop['cache_hit_ms']:.1f} ms"
    )

    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # what a DataLoader worker runs with (and one OpenCV thread: one core)
    cv2.setNumThreads(1)
    try:
        report["pipeline"] = pipe = bench_training_pipeline(args, work / "cache")
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)
    bd, steps = pipe["breakdown_ms"], pipe["augmentation_steps_ms"]
    verdict = "PASS" if pipe["pass"] else "FAIL"
    print(
        f"training pipeline per worker, {args.size}px, {pipe['crops']} crops x {args.passes} passes: "
        f"{pipe['train_img_s']:.0f} img/s per CPU-second (getitem + encode_targets; getitem alone "
        f"{pipe['getitem_img_s']:.0f}) -> {verdict} against {args.target:.0f} img/s; wall clock "
        f"{pipe['train_img_s_wall_clock']:.0f} img/s"
    )
    print(
        f"  in place, CPU ms per image: decode {bd['decode']:.2f}, augmentation {bd['augmentation']:.2f}, "
        f"targets {bd['targets']:.2f} (total {bd['total']:.2f}); targets per batch of {pipe['batch']} (as "
        f"training_step does): {pipe['targets_batched_ms_per_image']:.3f} ms/img; collating batches of "
        f"{pipe['batch']} (also a worker's job): {pipe['collate_ms_per_image']:.3f} ms/img"
    )
    print("  augmentation steps (CPU ms/img): " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))
    print(f"  eval pipeline (decode + eval transform): {pipe['eval_img_s']:.0f} img/s per CPU-second")
    machine["load_average_end"] = os.getloadavg()
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        report = run(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            report = run(args, Path(tmp))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
