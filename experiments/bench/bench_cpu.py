"""CPU benchmark: PIPNet inference latency (batch 1, decode included) and training throughput.

Machines of the same kind differ up to ~3.5x in speed, so every figure is printed beside the CPU model and
flags, and compared with a plain eager baseline of the same network measured in the same run:
- inference: baseline = `torch.no_grad()` forward of the bare network, then our decode; ours =
  `PIPNetModule.predict_landmarks` under `torch.inference_mode()` with channels-last memory format.
- training: baseline = a bare loop (forward, the PIP loss on precomputed targets, Adam step); ours = the
  LightningModule's `training_step` (targets encoded on the fly) with the same optimizer step.

Usage: python experiments/bench/bench_cpu.py [--size 256] [--backbone resnet18] [--stride 32]
       [--threads N] [--out experiments/bench/results/cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pipnet_lit.lit_module import PIPNetModule
from pipnet_lit.pip import decode, encode_targets, pip_loss

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_info() -> dict[str, object]:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def write_report(report: dict, out: str | Path) -> Path:
    """Write a benchmark's report as JSON to ``out`` (folders created) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def make_module(args: argparse.Namespace) -> PIPNetModule:
    module = PIPNetModule(
        backbone=args.backbone, net_stride=args.stride, input_size=args.size, pretrained=False, num_nb=10
    )
    rng = np.random.default_rng(0)
    module.set_meanface(rng.uniform(0.1, 0.9, size=(68, 2)))
    return module


def bench_inference(args: argparse.Namespace) -> dict[str, float]:
    module = make_module(args).eval()
    x = torch.randn(1, 3, args.size, args.size)
    neighbors = module.neighbors

    def baseline() -> None:
        with torch.no_grad():
            decode(module.net(x), neighbors)

    fast = make_module(args).eval().to(memory_format=torch.channels_last)
    fast.load_state_dict(module.state_dict())
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def ours() -> None:
        with torch.inference_mode():
            fast.predict_landmarks(x_cl)

    base_t = statistics.median(timed(baseline, args.warmup, args.iters))
    ours_t = statistics.median(timed(ours, args.warmup, args.iters))
    return {
        "baseline_ms": 1000 * base_t,
        "ours_ms": 1000 * ours_t,
        "ours_fps": 1.0 / ours_t,
        "speedup": base_t / ours_t,
    }


def bench_training(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    module = make_module(args).train()
    batch = {
        "image": torch.randn(args.train_batch, 3, args.size, args.size),
        "landmarks": torch.rand(args.train_batch, 68, 2),
    }
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    grid = module.net.grid_size(args.size)
    targets = encode_targets(batch["landmarks"], module.neighbors, grid)

    def baseline() -> None:
        loss = pip_loss(module.net(batch["image"]), targets).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def ours() -> None:
        loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    module.log = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    module.log_dict = lambda *a, **k: None
    base_t = statistics.median(timed(baseline, 1, args.train_iters))
    ours_t = statistics.median(timed(ours, 1, args.train_iters))
    out = {
        "batch": args.train_batch,
        "baseline_img_s": args.train_batch / base_t,
        "ours_img_s": args.train_batch / ours_t,
        "ratio": base_t / ours_t,
    }
    # model.channels_last=true, fp32 and with trainer.precision=bf16-mixed (autocast, as Lightning runs it)
    for name, dtype in (("channels_last_fp32", None), ("channels_last_bf16_mixed", torch.bfloat16)):
        torch.manual_seed(0)
        fast = PIPNetModule(
            backbone=args.backbone, net_stride=args.stride, input_size=args.size, pretrained=False, num_nb=10,
            channels_last=True,
        )  # fmt: skip
        fast.set_meanface(np.random.default_rng(0).uniform(0.1, 0.9, size=(68, 2)))
        fast.train()
        fast.log = lambda *a, **k: None
        fast.log_dict = lambda *a, **k: None
        fast_opt = torch.optim.Adam(fast.parameters(), lr=1e-4)

        def step(fast=fast, fast_opt=fast_opt, dtype=dtype) -> None:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = fast.training_step(batch, 0)
            fast_opt.zero_grad(set_to_none=True)
            loss.backward()
            fast_opt.step()

        t = statistics.median(timed(step, 1, args.train_iters))
        out[f"{name}_img_s"] = args.train_batch / t
        out[f"{name}_ratio"] = base_t / t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-iters", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    report = {"machine": cpu_info(), "config": vars(args) | {"out": None}}
    print(
        f"CPU: {report['machine']['cpu']}  flags: {' '.join(report['machine']['flags']) or '-'}  "
        f"threads: {report['machine']['threads']}  torch {torch.__version__}"
    )
    report["inference"] = inf = bench_inference(args)
    print(
        f"inference batch 1, {args.size}px {args.backbone}/s{args.stride}, decode included: "
        f"baseline {inf['baseline_ms']:.1f} ms, ours {inf['ours_ms']:.1f} ms ({inf['ours_fps']:.1f} FPS), "
        f"speed-up x{inf['speedup']:.2f}"
    )
    report["training"] = tr = bench_training(args)
    flags = report["machine"]["flags"]
    bf16 = "" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "; no bf16 in this CPU: emulated"
    print(
        f"training batch {tr['batch']}, {args.size}px: baseline {tr['baseline_img_s']:.1f} img/s, "
        f"ours {tr['ours_img_s']:.1f} img/s (ratio x{tr['ratio']:.2f}); channels-last fp32 "
        f"{tr['channels_last_fp32_img_s']:.1f} img/s (x{tr['channels_last_fp32_ratio']:.2f}); channels-last "
        f"bf16-mixed {tr['channels_last_bf16_mixed_img_s']:.1f} img/s "
        f"(x{tr['channels_last_bf16_mixed_ratio']:.2f}{bf16})"
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
