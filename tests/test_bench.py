"""The CPU benchmark script runs and records its figures (tiny settings; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_bench_writes_ratios_and_machine_info(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--size", "64", "--stride", "32", "--warmup", "0", "--iters", "2", "--train-batch", "2"]
    args += ["--train-iters", "1", "--threads", "1", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments/bench/bench_cpu.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["machine"]["threads"] == 1 and report["machine"]["cpu"]
    inference, training = report["inference"], report["training"]
    assert inference["ours_fps"] == pytest.approx(1000.0 / inference["ours_ms"])
    assert inference["speedup"] == pytest.approx(inference["baseline_ms"] / inference["ours_ms"])
    assert training["batch"] == 2 and training["ours_img_s"] > 0
    for variant in ("channels_last_fp32", "channels_last_bf16_mixed"):
        assert training[f"{variant}_ratio"] == pytest.approx(
            training[f"{variant}_img_s"] / training["baseline_img_s"]
        )
    assert "channels-last bf16-mixed" in result.stdout
    assert "speed-up" in result.stdout and "CPU:" in result.stdout


def test_bench_pipeline_quick_writes_figures(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments/bench"))
    import bench_pipeline

    out = tmp_path / "pipeline.json"
    report = bench_pipeline.main(["--quick", "--size", "64", "--source-size", "96", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["machine"]["cpu"] and report["config"]["faces"] == 8
    prepare, pipeline = report["prepare"], report["pipeline"]
    for key in ("img_s_1_thread", "img_s_all_cores", "cache_hit_ms"):
        assert prepare[key] > 0, key
    for key in (
        "train_img_s",
        "train_img_s_wall_clock",
        "getitem_img_s",
        "eval_img_s",
        "collate_ms_per_image",
    ):
        assert pipeline[key] > 0, key
    assert pipeline["grid"] == [2, 2] and isinstance(pipeline["pass"], bool)
    assert all(pipeline["breakdown_ms"][k] > 0 for k in ("decode", "augmentation", "targets"))
    assert {"Rotate", "compose_bookkeeping", "wrapper"} <= set(pipeline["augmentation_steps_ms"])


def test_training_benchmark_reports_throughput_and_data_wait(tmp_path):
    """bench_training on the tiny synthetic set (CPU): the StepTimer's figures are consistent."""
    out = tmp_path / "training.json"
    tiny = [
        "data.sources.synthetic.n_train=8", "data.sources.synthetic.n_common=2",
        "data.sources.synthetic.n_challenge=2", "data.sources.synthetic.n_wild=0",
        "data.sources.synthetic.image_size=80", "data.input_size=64", "data.batch_size=2",
        "data.num_workers=0",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments/bench/bench_training.py"), "--steps", "4",
         "--workdir", str(tmp_path), "--out", str(out), "--", *tiny],
        capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    training = json.loads(out.read_text())["training"]
    assert training["steps"] == 2  # 4 steps, the first 2 are warm-up
    assert training["batch_size"] == 2 and training["input_size"] == 64 and training["device"] == "cpu"
    assert 0.0 <= training["data_wait_share"] < 1.0 and training["images_per_s"] > 0
    total_s = 2 * (training["step_ms"] + training["wait_ms"]) / 1000
    assert training["images_per_s"] == pytest.approx(4 / total_s, rel=1e-6)
    assert training["data_wait_share"] == pytest.approx(training["wait_ms"] / (total_s * 500), rel=1e-6)
    assert "waiting for data" in result.stdout and "CPU:" in result.stdout
