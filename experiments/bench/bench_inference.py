"""Inference benchmark of every export path: speed against eager PyTorch, and accuracy on a trained model.

Speed (the issue's setting: ResNet-18, stride 32, 256 px, random weights): end to end, crop tensor ->
landmarks (decode and merge included), batch 1 and 16, every path against a plain eager fp32
`torch.no_grad()` forward + `pipnet_lit.pip.decode` of the same network. Each path is timed ALONE, in a
process of its own (`--isolation process`, the default): ONNX Runtime's and OpenVINO's thread pools keep
spinning after a call and take the cores from whatever runs next, so a round-robin in one process
(`--isolation round-robin`, the old way) measures the neighbours' contention more than the runtime.
The baseline runs in a process of its own too; ratios are baseline time / path time (medians).
Paths: eager (inference_mode, channels-last; bf16 autocast where the CPU has bf16), TorchScript, ONNX
Runtime fp32 / int8 (static QDQ), OpenVINO fp32 (precision hint f32) / bf16 (bf16 CPUs) / int8 (NNCF).
On a CUDA machine the GPU paths (eager fp32, bf16 + channels-last) are timed as well.

Accuracy: every path's landmarks against eager fp32 on a trained model, on the synthetic test splits: NME
(the dataset's primary metric), its relative change, and the largest landmark difference (crop units).
The model is `--ckpt`, else the synthetic demo config trained once into
`outputs/bench/inference_synthetic_<input size>px/`
(reused by later runs; delete the folder to retrain). int8 calibration: `--calib-n` training crops.

Targets (issue 13): fp32 >= 1.4x; int8 >= 4x at batch 1 and >= 5x at batch 16; int8 NME within 1 %
(relative) of fp32. Written to experiments/bench/results/inference.json.

Usage: python experiments/bench/bench_inference.py [--size 256] [--stride 32] [--batches 1 16]
       [--threads N] [--ckpt PATH] [--quick] [--out experiments/bench/results/inference.json]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import cpu_info, write_report  # noqa: E402  (helpers of the CPU benchmark)

from pipnet_lit.checkpoints import read_checkpoint, write_checkpoint  # noqa: E402
from pipnet_lit.export import (  # noqa: E402
    export_onnx,
    export_openvino,
    export_torchscript,
    graph_metadata,
    quantize_onnx,
)
from pipnet_lit.export.command import calibration_crops  # noqa: E402
from pipnet_lit.landmark_graph import LandmarkGraph  # noqa: E402
from pipnet_lit.models import PIPNet  # noqa: E402
from pipnet_lit.pip import decode  # noqa: E402
from pipnet_lit.runtime import load_runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BASELINE = "baseline"  # the plain eager path: no_grad forward + decode (what every ratio divides)
BASELINE_NAME = "eager fp32 baseline (no_grad)"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "inference.json"
TRAIN_RUN = ("bench", "inference_synthetic")  # outputs/<task_name>/<run_name>/ of the trained model
TARGETS = {"fp32": 1.4, "int8_b1": 4.0, "int8_b16": 5.0, "int8_nme_rel": 0.01}


def has_bf16(machine: dict[str, Any]) -> bool:
    return any(f in machine["flags"] for f in ("avx512_bf16", "amx_bf16"))


def render_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """`n` synthetic face crops (n, 3, size, size), normalized like the eval transform."""
    from pipnet_lit.datasets.transforms import build_eval_transform
    from pipnet_lit.synthetic import render_face, sample_face_params

    rng = np.random.default_rng(seed)
    transform = build_eval_transform(size)
    none = np.zeros((0, 2), dtype=np.float32)
    return torch.stack(
        [transform(render_face(sample_face_params(rng, "clean", size))[0], none)[0] for _ in range(n)]
    )


def build_paths(
    graph: LandmarkGraph, folder: Path, calib: torch.Tensor, threads: int, machine: dict[str, Any]
) -> dict[str, tuple[str, str | None]]:
    """Export `graph` every way: path name -> (file, precision). ``eager`` paths run the checkpoint."""
    ckpt = write_checkpoint(graph, folder / "model.ckpt")
    onnx = export_onnx(graph, folder / "model.onnx")
    paths: dict[str, tuple[str, str | None]] = {
        "eager fp32 (inference_mode, channels-last)": (str(ckpt), "fp32")
    }
    if has_bf16(machine):
        paths["eager bf16 autocast (channels-last)"] = (str(ckpt), "bf16")
    paths["torchscript fp32"] = (str(export_torchscript(graph, folder / "model.pt")), None)
    paths["onnxruntime fp32"] = (str(onnx), None)
    paths["onnxruntime int8"] = (str(quantize_onnx(onnx, folder / "model_int8.onnx", calib)), None)
    xml = export_openvino(graph, folder / "model.xml", onnx_path=onnx)
    paths["openvino fp32"] = (str(xml), None)
    if has_bf16(machine):
        paths["openvino bf16"] = (str(xml), "bf16")
    paths["openvino int8"] = (
        str(export_openvino(graph, folder / "model_int8.xml", calib, onnx_path=onnx)),
        None,
    )
    return paths


def load_path(file: str, precision: str | None, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """One exported path as a callable (``BASELINE`` is the plain eager path of the checkpoint)."""
    if precision == BASELINE:
        return baseline_fn(read_checkpoint(file).graph())
    return load_runtime(file, precision=precision, num_threads=threads or None)


def time_alone(
    file: str,
    precision: str | None,
    batches: Sequence[int],
    size: int,
    warmup: int,
    rounds: int,
    threads: int,
) -> dict[str, float]:
    """Median seconds per call of one path at each batch size, in this process and nothing else."""
    fn = load_path(file, precision, threads)
    out = {}
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        n = rounds if batch == 1 else max(3, rounds // 3)
        out[str(batch)] = time_round_robin({"path": lambda x=x: fn(x)}, warmup, n)["path"]
    return out


def time_in_own_process(file: str, precision: str | None, args: argparse.Namespace) -> dict[str, float]:
    """`time_alone` in a fresh Python process (no other runtime's threads alive), same thread count."""
    import json

    spec = json.dumps(
        {
            "file": file,
            "precision": precision,
            "batches": args.batches,
            "size": args.size,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
        }
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(
        [sys.executable, __file__, "--time-one", spec], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"timing {file} ({precision}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline_fn(graph: LandmarkGraph) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plain eager fp32 path every ratio is taken against: no_grad forward, then our decode."""
    net, neighbors = graph.net, graph.neighbors()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return decode(net(x), neighbors, merge=graph.merge)

    return run


def time_round_robin(
    fns: dict[str, Callable[[], Any]], warmup: int, rounds: int, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median seconds per call of each function, timed one call of each per round (same conditions)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def time_paths(
    specs: dict[str, tuple[str, str | None]], args: argparse.Namespace, batches: Sequence[int], size: int
) -> dict[str, dict[str, float]]:
    """Median seconds per call: path name -> batch -> seconds, each path alone in its own process
    (``args.isolation == "process"``) or all round-robin in this one."""
    threads = torch.get_num_threads()
    own = copy.copy(args)
    own.batches, own.size = list(batches), size
    if args.isolation == "process":
        return {name: time_in_own_process(file, prec, own) for name, (file, prec) in specs.items()}
    loaded = {name: load_path(file, prec, threads) for name, (file, prec) in specs.items()}
    per_path: dict[str, dict[str, float]] = {}
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        rounds = args.rounds if batch == 1 else max(3, args.rounds // 3)
        fns = {name: (lambda fn=fn, x=x: fn(x)) for name, fn in loaded.items()}
        for name, t in time_round_robin(fns, args.warmup, rounds).items():
            per_path.setdefault(name, {})[str(batch)] = t
    return per_path


def bench_speed(args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    net = PIPNet(args.backbone, 68, 10, args.stride, pretrained=False, input_size=args.size).eval()
    meanface = np.random.default_rng(0).uniform(0.1, 0.9, size=(68, 2))
    graph = LandmarkGraph(net, meanface).eval()
    calib = render_crops(args.calib_n_speed, args.size)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        paths = build_paths(graph, Path(tmp), calib, torch.get_num_threads(), machine)
        ckpt = paths["eager fp32 (inference_mode, channels-last)"][0]
        per_path = time_paths({BASELINE_NAME: (ckpt, BASELINE), **paths}, args, args.batches, args.size)
        results: dict[str, Any] = {"isolation": args.isolation}
        for batch in args.batches:
            base = per_path[BASELINE_NAME][str(batch)]
            results[f"batch_{batch}"] = {
                name: {
                    "ms": 1000 * t[str(batch)],
                    "per_face_ms": 1000 * t[str(batch)] / batch,
                    "speedup": base / t[str(batch)],
                }
                for name, t in per_path.items()
            }
        if torch.cuda.is_available():
            results["gpu"] = bench_gpu(graph, args)
    return results


def bench_gpu(graph: LandmarkGraph, args: argparse.Namespace) -> dict[str, Any]:
    """Batched GPU inference: eager fp32 vs bf16 autocast + channels-last (decode included)."""
    name = torch.cuda.get_device_name()
    fp32 = load_runtime(graph, precision="fp32", device="cuda")
    bf16 = load_runtime(graph, precision="bf16", device="cuda")
    plain = copy.deepcopy(graph).cuda()  # contiguous (not channels-last) weights, like the CPU baseline
    base = baseline_fn(plain)
    out: dict[str, Any] = {"device": name}
    for batch in (*args.batches, 64):
        x = torch.randn(batch, 3, args.size, args.size, device="cuda")
        fns = {
            "eager fp32 baseline (no_grad)": lambda x=x: base(x),
            "eager fp32 (inference_mode, channels-last)": lambda x=x: fp32.run(x),
            "eager bf16 autocast (channels-last)": lambda x=x: bf16.run(x),
        }
        medians = time_round_robin(fns, args.warmup, args.rounds, sync=torch.cuda.synchronize)
        ref = medians["eager fp32 baseline (no_grad)"]
        out[f"batch_{batch}"] = {
            k: {"ms": 1000 * t, "faces_per_s": batch / t, "speedup": ref / t} for k, t in medians.items()
        }
    return out


# -- accuracy on a trained model ----------------------------------------------------------------------
def demo_input_size(train_overrides: Sequence[str]) -> int:
    """The input size the demo config trains at (``data.input_size=`` among ``train_overrides`` wins)."""
    from omegaconf import OmegaConf

    for override in train_overrides:
        if override.startswith("data.input_size="):
            return int(override.split("=", 1)[1])
    return int(OmegaConf.load(REPO / "conf" / "experiment" / "synthetic.yaml").data.input_size)


def trained_checkpoint(args: argparse.Namespace) -> Path:
    """`--ckpt`, or the demo config trained once into outputs/bench/inference_synthetic_<size>px/ (reused;
    the size in the name, so a demo that changed its input size is not measured with a stale model)."""
    if args.ckpt:
        return Path(args.ckpt)
    task, run = TRAIN_RUN
    run = f"{run}_{demo_input_size(args.train_override)}px"
    run_dir = REPO / "outputs" / task / run
    found = sorted(run_dir.glob("**/last.ckpt"))
    if not found or not (run_dir / "test_metrics.json").is_file():
        print(f"training the synthetic demo model into {run_dir} (once; reused by later runs)", flush=True)
        cmd = [
            sys.executable, "-m", "pipnet_lit.train", "+experiment=synthetic", f"task_name={task}",
            f"run_name={run}", "ckpt_path=last", "callbacks.rich_progress_bar=null", *args.train_override,
        ]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True)
        found = sorted(run_dir.glob("**/last.ckpt"))
    if not found:
        raise FileNotFoundError(f"no last.ckpt under {run_dir} after training")
    return found[0]


def evaluation_sets(
    input_size: int, data: str, overrides: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data config's evaluation subsets (crops, landmarks) and its primary metric spec."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from pipnet_lit.config import check_config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=check_config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={data}", *overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.root_dir = os.environ.get("PIPNET_ROOT", str(REPO))
    dm = instantiate(cfg.data, input_size=input_size, load_train=False, load_unlabeled=False)
    dm.prepare_data()
    dm.setup("test")
    sets = {}
    for key, dataset in dm.eval_sets.items():
        items = [dataset[i] for i in range(len(dataset))]
        sets[key] = (
            torch.stack([it["image"] for it in items]),
            torch.stack([it["landmarks"] for it in items]),
        )
    spec = dm.evaluation_plan("test").metrics[0]
    return sets, spec.as_dict()


def nme_of(pred: torch.Tensor, target: torch.Tensor, spec: dict[str, Any]) -> float:
    from pipnet_lit.metrics.functional import nme

    return float(nme(pred.double(), target.double(), spec["norm"], norm_indices=spec.get("indices")).mean())


def predict_all(
    fn: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor, batch: int = 16
) -> torch.Tensor:
    return torch.cat([fn(crops[i : i + batch]).float().cpu() for i in range(0, len(crops), batch)])


def bench_accuracy(args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    ckpt = trained_checkpoint(args)
    graph = read_checkpoint(ckpt).graph()
    overrides = list(args.data_override)
    calib = calibration_crops(args.data, graph.input_size, args.calib_n, seed=0, data_overrides=overrides)
    sets, spec = evaluation_sets(graph.input_size, args.data, overrides)
    report: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "model": {
            k: graph_metadata(graph)[k] for k in ("backbone", "net_stride", "input_size", "num_landmarks")
        },
        "metric": spec["key"],
        "calibration_crops": len(calib),
        "subsets": {k: len(v[0]) for k, v in sets.items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-inference-acc-") as tmp:
        specs = build_paths(graph, Path(tmp), calib, torch.get_num_threads(), machine)
        paths = {name: load_path(file, prec, torch.get_num_threads()) for name, (file, prec) in specs.items()}
        reference = {key: predict_all(baseline_fn(graph), crops) for key, (crops, _) in sets.items()}
        ref_nme = {key: nme_of(reference[key], sets[key][1], spec) for key in sets}
        report["paths"] = {"eager fp32 baseline (no_grad)": {"nme": ref_nme}}
        for name, fn in paths.items():
            entry: dict[str, Any] = {"nme": {}, "rel_change": {}, "max_abs_diff": {}}
            for key, (crops, target) in sets.items():
                pred = predict_all(fn, crops)
                value = nme_of(pred, target, spec)
                entry["nme"][key] = value
                entry["rel_change"][key] = (value - ref_nme[key]) / ref_nme[key]
                entry["max_abs_diff"][key] = float((pred - reference[key]).abs().max())
            report["paths"][name] = entry
        # speed of the trained model's own setting, batch 1 (the probe's second table)
        del paths  # their threads must not run beside the timed paths
        ckpt = specs["eager fp32 (inference_mode, channels-last)"][0]
        timed = time_paths({BASELINE_NAME: (ckpt, BASELINE), **specs}, args, [1], graph.input_size)
        for name, t in timed.items():
            report["paths"][name]["batch_1_ms"] = 1000 * t["1"]
            report["paths"][name]["batch_1_speedup"] = timed[BASELINE_NAME]["1"] / t["1"]
    return report


# -- report --------------------------------------------------------------------------------------------
def check_targets(speed: dict[str, Any], accuracy: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's targets against the best path of each kind (fp32: ONNX Runtime / OpenVINO)."""
    checks: dict[str, Any] = {}
    for key, row in speed.items():
        if not key.startswith("batch_"):
            continue
        batch = int(key.split("_")[1])
        fp32 = max(v["speedup"] for k, v in row.items() if k in ("onnxruntime fp32", "openvino fp32"))
        int8 = max(v["speedup"] for k, v in row.items() if k.endswith("int8"))
        int8_target = TARGETS["int8_b1"] if batch == 1 else TARGETS["int8_b16"]
        checks[key] = {
            "best_fp32_speedup": fp32,
            "fp32_target": TARGETS["fp32"],
            "fp32_met": fp32 >= TARGETS["fp32"],
            "best_int8_speedup": int8,
            "int8_target": int8_target,
            "int8_met": int8 >= int8_target,
        }
    if accuracy:
        worst = {
            name: max(abs(v) for v in entry["rel_change"].values())
            for name, entry in accuracy["paths"].items()
            if "rel_change" in entry
        }
        checks["nme"] = {
            "worst_rel_change": worst,
            "int8_target": TARGETS["int8_nme_rel"],
            "int8_met": all(v <= TARGETS["int8_nme_rel"] for k, v in worst.items() if k.endswith("int8")),
        }
    return checks


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"CPU: {m['cpu']}  flags: {' '.join(m['flags']) or '-'}  threads: {m['threads']}  "
        f"torch {m['torch']}  onnxruntime {m.get('onnxruntime')}  openvino {m.get('openvino')}  "
        f"nncf {m.get('nncf')}"
    )
    cfg = report["config"]
    print(f"speed: {cfg['backbone']} stride {cfg['stride']} at {cfg['size']} px, random weights, with decode")
    speed = report["speed"]
    batches = [k for k in speed if k.startswith("batch_")]
    print(f"{'path':46s}" + "".join(f"{b.replace('_', ' '):>22s}" for b in batches))
    for name in speed[batches[0]]:
        cells = "".join(
            f"{speed[b][name]['ms']:10.1f} ms  x{speed[b][name]['speedup']:5.2f}" for b in batches
        )
        print(f"{name:46s}{cells}")
    if "gpu" in speed:
        gpu = speed["gpu"]
        print(f"GPU {gpu['device']}:")
        for key, row in gpu.items():
            if key.startswith("batch_"):
                for name, v in row.items():
                    rate = f"{v['faces_per_s']:9.0f} faces/s"
                    print(f"  {key:10s} {name:44s} {v['ms']:8.2f} ms  {rate}  x{v['speedup']:.2f}")
    acc = report.get("accuracy")
    if acc:
        model = acc["model"]
        print(
            f"accuracy: {acc['checkpoint']} ({model['backbone']} stride {model['net_stride']} at "
            f"{model['input_size']} px), {acc['metric']} (%) per subset, relative change vs eager fp32"
        )
        subsets = list(acc["subsets"])
        print(f"{'path':46s}" + "".join(f"{s:>26s}" for s in subsets) + f"{'b1 x':>8s}")
        for name, entry in acc["paths"].items():
            cells = ""
            for s in subsets:
                change = entry.get("rel_change", {}).get(s)
                cells += f"{100 * entry['nme'][s]:10.3f}" + (
                    f" ({100 * change:+6.2f} %)" if change is not None else " " * 11
                )
                cells += " " * 5
            print(f"{name:46s}{cells}{entry.get('batch_1_speedup', float('nan')):8.2f}")
    for key, check in report["targets"].items():
        if key == "nme":
            worst = ", ".join(f"{k} {100 * v:.2f} %" for k, v in check["worst_rel_change"].items())
            verdict = "met" if check["int8_met"] else "NOT met"
            limit = 100 * check["int8_target"]
            print(f"target int8 NME within {limit:.0f} %: {verdict} (worst |change|: {worst})")
        else:
            fp32 = "met" if check["fp32_met"] else "NOT met"
            int8 = "met" if check["int8_met"] else "NOT met"
            print(
                f"target {key.replace('_', ' ')}: fp32 x{check['best_fp32_speedup']:.2f} "
                f"(>= {check['fp32_target']}: {fp32}), int8 x{check['best_int8_speedup']:.2f} "
                f"(>= {check['int8_target']}: {int8})"
            )


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    for pkg in ("onnxruntime", "openvino", "nncf", "onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--threads", type=int, default=0, help="threads of every backend (0: torch's default)"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=50, help="timed rounds at batch 1 (a third at larger)")
    parser.add_argument("--calib-n", type=int, default=100, help="training crops calibrating int8")
    parser.add_argument("--calib-n-speed", type=int, default=32, help="rendered crops for the speed model")
    parser.add_argument("--ckpt", default=None, help="trained checkpoint for the accuracy check")
    parser.add_argument("--data", default="synthetic", help="data config: test splits and calibration crops")
    parser.add_argument("--data-override", action="append", default=[], help="e.g. data.root=/data")
    parser.add_argument("--train-override", action="append", default=[], help="when training the model")
    parser.add_argument("--no-accuracy", action="store_true", help="speed only")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run; no real figures)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument(
        "--isolation",
        choices=("process", "round-robin"),
        default="process",
        help="process: each path timed alone in a process of its own (default); round-robin: all in one",
    )
    parser.add_argument("--time-one", default=None, help=argparse.SUPPRESS)  # internal: one path, JSON out
    args = parser.parse_args(argv)
    if args.time_one:
        import json

        spec = json.loads(args.time_one)
        torch.set_num_threads(int(spec.pop("threads")))
        print(json.dumps(time_alone(**spec, threads=torch.get_num_threads())))
        return {}
    if args.quick:
        args.warmup, args.rounds, args.calib_n, args.calib_n_speed = 1, 3, 4, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    machine = {**cpu_info(), **versions()}
    report: dict[str, Any] = {"machine": machine, "config": vars(args) | {"out": None}}
    report["speed"] = bench_speed(args, machine)
    report["accuracy"] = None if args.no_accuracy else bench_accuracy(args, machine)
    report["targets"] = check_targets(report["speed"], report["accuracy"])
    print_report(report)
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
