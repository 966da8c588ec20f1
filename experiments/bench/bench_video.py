"""Real-time video benchmark: frames per second of ``python -m pipnet_lit.predict``, per stage and end to end.

Writes a 640x480 synthetic video of one face drifting, nodding and tilting (`pipnet_lit.synthetic`,
``--seconds`` at ``--fps``), runs predict on it in this process (after a warm-up run of a few frames, so
that first-call costs stay out) with the given checkpoint, exported model, backend, precision, detector and
``detect_every``, and prints the frames per second of each stage (decode, detect, track, landmarks, draw,
encode: predict's own ``time.perf_counter`` timing, its JSON ``timing`` entry) and end to end, beside the
CPU model and flags and how many frames the detector ran on. Wall-clock times: run it on an idle machine.
With random weights pass ``--min-score 0``: their landmark scores are low, so every track would be lost
and re-detected.

Usage: python experiments/bench/bench_video.py --ckpt model.ckpt [--model model_int8.xml --precision int8]
       [--backend NAME] [--detect-every 5] [--detector haar] [--seconds 5] [--fps 25] [--threads N]
       [--min-score 0 (random weights)] [--no-save] [--keep DIR] [--out experiments/bench/results/video.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import cpu_info, write_report  # noqa: E402  (a sibling script, not a package)

from pipnet_lit.predict import parse_config, predict  # noqa: E402
from pipnet_lit.synthetic import render_face, sample_face_params  # noqa: E402

WIDTH, HEIGHT = 640, 480


def write_video(path: Path, seconds: float, fps: float, seed: int = 0) -> int:
    """A 640x480 mp4 of one synthetic face (about 220 px) moving smoothly; returns the number of frames."""
    base = sample_face_params(np.random.default_rng(seed), "clean", WIDTH, face_fraction=(0.35, 0.35))
    _, points = render_face(base)
    centre = (points.min(0) + points.max(0)) / 2
    base = dataclasses.replace(base, cx=base.cx + WIDTH / 2 - centre[0], cy=base.cy + WIDTH / 2 - centre[1])
    top = (WIDTH - HEIGHT) // 2  # rendered square, cut to 640x480 around the face
    frames = max(1, round(seconds * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} (OpenCV mp4v writer)")
    for i in range(frames):
        t = i / fps
        params = dataclasses.replace(
            base,
            cx=base.cx + 60 * math.sin(2 * math.pi * t / 4),
            cy=base.cy + 20 * math.sin(2 * math.pi * t / 3),
            roll=base.roll + 8 * math.sin(2 * math.pi * t / 5),
            yaw=base.yaw + 10 * math.sin(2 * math.pi * t / 6),
        )
        image, _ = render_face(params)
        writer.write(image[top : top + HEIGHT])
    writer.release()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="the checkpoint (settings, and the eager network)")
    parser.add_argument("--model", help="an exported model (.pt / .onnx / .xml) to run instead")
    parser.add_argument("--backend", help="eager, torchscript, onnxruntime, openvino (default: by --model)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or int8")
    parser.add_argument(
        "--detect-every", type=int, default=5, help="detector every N frames (1: every frame)"
    )
    parser.add_argument("--detector", default="haar")
    parser.add_argument("--seconds", type=float, default=5.0, help="video length")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--threads", type=int, help="the backend's intra-op threads")
    parser.add_argument(
        "--spinning", choices=["on", "off"], help="ONNX Runtime's idle-thread spinning (default: predict's)"
    )
    parser.add_argument(
        "--min-score",
        type=float,
        help="tracking.min_score (0 for random weights, whose scores would lose every track)",
    )
    parser.add_argument("--no-save", action="store_true", help="JSON only: no drawing, no encoding")
    parser.add_argument("--keep", type=Path, help="write the video and predict's output here (kept)")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        video = folder / "bench.mp4"
        start = time.perf_counter()
        frames = write_video(video, args.seconds, args.fps)
        print(f"wrote {video}: {frames} frames {WIDTH}x{HEIGHT} in {time.perf_counter() - start:.1f} s")
        options = [
            f"ckpt={args.ckpt}",
            f"input={video}",
            f"detector={args.detector}",
            f"detect_every={args.detect_every}",
            f"precision={args.precision}",
            f"save_images={not args.no_save}",
            "progress=false",
        ]
        options += [f"model={args.model}"] if args.model else []
        options += [f"backend={args.backend}"] if args.backend else []
        options += [f"threads={args.threads}"] if args.threads else []
        options += [f"spinning={args.spinning == 'on'}"] if args.spinning else []
        options += [f"tracking.min_score={args.min_score}"] if args.min_score is not None else []
        predict(parse_config([*options, f"output={folder / 'warmup'}", f"max_frames={min(frames, 5)}"]))
        summary = predict(parse_config([*options, f"output={folder / 'out'}"]))
        result = json.loads(summary.json_path.read_text())
    timing = result["timing"]
    info = cpu_info()
    print(f"CPU: {info['cpu']}; flags: {' '.join(info['flags'])}; torch threads {info['threads']}")
    print(
        f"{result['backend']} {result['precision']} ({result['model'] or args.ckpt}), detector "
        f"{args.detector}, detect_every {result['detect_every']}: boxes {summary.boxes}; {summary.faces} "
        f"faces in {timing['count']} frames; setup {timing['setup_seconds']:.2f} s"
    )
    print(f"{'stage':<12}{'seconds':>10}{'frames/s':>12}{'calls':>8}{'ms/call':>10}")
    for stage, seconds in timing["seconds"].items():
        rate, calls = timing["per_second"][stage], timing["calls"][stage]
        rate = rate if rate is not None else float("nan")
        print(f"{stage:<12}{seconds:>10.3f}{rate:>12.1f}{calls:>8}{1000 * seconds / calls:>10.2f}")
    print(f"{'end to end':<12}{timing['total_seconds']:>10.3f}{timing['end_to_end_per_second']:>12.1f}")
    print(
        "frames/s of a stage: all frames / its seconds (what the run would reach if it were the only stage)"
    )
    if args.out:
        report = {
            **info,
            "video": {"width": WIDTH, "height": HEIGHT, "frames": frames, "fps": args.fps},
            "options": options,
            "backend": result["backend"],
            "precision": result["precision"],
            "boxes": summary.boxes,
            "timing": timing,
        }
        write_report(report, args.out)


if __name__ == "__main__":
    main()
