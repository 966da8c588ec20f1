"""Training benchmark of a real job: images per second and the share of step time spent waiting for data.

Runs the training loop of an experiment (default the demo, `+experiment=synthetic`) for `--steps` steps
with `pipnet_lit.callbacks.StepTimer`, which times each step and the wait for the batch before it (CUDA
synchronized at the boundaries). On a CUDA machine the GPU recipe is used (`trainer=gpu`: bf16-mixed,
channels-last, 8 pinned, persistent, prefetching workers); a fed GPU waits for ~0 % of the time. On a CPU the
experiment's own trainer runs (add `trainer.precision=bf16-mixed model.channels_last=true` to try bf16 on a
CPU that has it). The CPU model and flags are printed beside the figures.

Usage: python experiments/bench/bench_training.py [--steps 30] [--out results/training.json]
       [-- +experiment=300w_r18 data.root=/data ...]   (Hydra overrides after --)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import cpu_info, write_report  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training.json"


def run(steps: int, overrides: Sequence[str], workdir: Path) -> dict[str, Any]:
    """Train ``steps`` steps of the composed job and return the StepTimer's summary and the settings used."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from pipnet_lit.callbacks import StepTimer
    from pipnet_lit.config import check_config_dir
    from pipnet_lit.train import train

    gpu = torch.cuda.is_available()
    base = ["+experiment=synthetic", *(["trainer=gpu"] if gpu else [])]
    job = [
        "trainer.max_epochs=1", f"+trainer.limit_train_batches={steps}", "+trainer.limit_val_batches=0",
        "test=false", "callbacks.model_checkpoint=null", "callbacks.rich_progress_bar=null",
        "callbacks.prediction_grid=null", "run_name=bench_training", f"paths.root_dir={workdir}",
        "+callbacks.step_timer._target_=pipnet_lit.callbacks.StepTimer",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=check_config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*base, *overrides, *job], return_hydra_config=True)
    with open_dict(
        cfg
    ):  # as a Hydra job would have them: a run folder, and no hydra node in the job's config
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(workdir / "outputs")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    _, objects = train(cfg)
    timer = next(c for c in objects["trainer"].callbacks if isinstance(c, StepTimer))
    return {
        "overrides": [*base, *overrides],
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.model.get("channels_last", False)),
        "batch_size": int(cfg.data.batch_size),
        "input_size": int(cfg.data.input_size),
        "num_workers": int(cfg.data.num_workers),
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        **timer.summary(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps (the first 2 are warm-up)")
    parser.add_argument("--workdir", default=None, help="data and run folder (default: a temporary one)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        result = run(args.steps, overrides, workdir)
    machine = cpu_info()
    report = {"machine": machine, "training": result}
    print(
        f"CPU: {machine['cpu']}  flags: {' '.join(machine['flags']) or '-'}  threads: {machine['threads']}  "
        f"device: {result['device']}"
    )
    print(
        f"training {result['input_size']}px batch {result['batch_size']} ({result['precision']}, "
        f"channels-last {result['channels_last']}, {result['num_workers']} workers): "
        f"{result['images_per_s']:.1f} img/s, step {result['step_ms']:.0f} ms, waiting for data "
        f"{100 * result['data_wait_share']:.1f} % of the time ({result['steps']:.0f} steps)"
    )
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
