"""Curriculum self-training chain: pseudo-labels, rounds as Hydra jobs, resume, multi-chain stages."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from hydra_job import TINY_SSL, job_env
from hydra_plugins.pipnet_lit_ssl.ssl_chain_sweeper import chain_name
from pipnet_lit.datasets.pseudo_labels import read_pseudo_labels, write_pseudo_labels
from pipnet_lit.ssl.chain import check_schedule, write_rounds_report
from pipnet_lit.ssl.pseudo_labels import select_confident


def test_select_confident_threshold_and_top_fraction():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    assert select_confident(scores).all()
    np.testing.assert_array_equal(select_confident(scores, threshold=0.5), [0, 1, 1, 1, 0])
    # top 40% of 5 = 2 faces: the two 0.9s (ties kept in order)
    np.testing.assert_array_equal(select_confident(scores, top_fraction=0.4), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(select_confident(scores, threshold=0.95, top_fraction=1.0), [0] * 5)
    with pytest.raises(ValueError, match="top_fraction"):
        select_confident(scores, top_fraction=0.0)


def test_pseudo_labels_round_trip_float32_and_filtering(tmp_path):
    names = ["a", "b", "c"]
    landmarks = np.random.default_rng(0).normal(0.5, 0.3, (3, 4, 2)).astype(np.float32)
    landmarks[0, 0] = [-0.25, 1.5]  # not clamped
    scores = np.array([0.7, 0.1, 0.4], dtype=np.float32)
    keep = np.array([True, False, True])
    write_pseudo_labels(tmp_path / "pl", names, landmarks, scores, {"round": 2, "task": "cls2"}, keep)
    labels = read_pseudo_labels(tmp_path / "pl")
    assert labels.names == ["a", "c"]
    np.testing.assert_array_equal(labels.landmarks, landmarks[[0, 2]].astype(np.float64))  # float32 exactly
    np.testing.assert_allclose(labels.scores, [0.7, 0.4], rtol=1e-7)
    assert labels.manifest["count"] == 2 and labels.manifest["count_pool"] == 3
    assert labels.manifest["round"] == 2 and labels.manifest["task"] == "cls2"
    (tmp_path / "pl" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no finished pseudo-labels"):
        read_pseudo_labels(tmp_path / "pl")


def test_schedule_and_chain_names():
    assert check_schedule(["cls3", "cls2", "std"]) == ["cls3", "cls2", "std"]
    with pytest.raises(ValueError, match="one of"):
        check_schedule(["cls4"])
    assert chain_name("run", ["model.num_nb=5", "seed=1"], swept=[]) == "run"
    combo = ["model.num_nb=5", "data.root=/d", "model.lr=0.001"]
    assert chain_name("run", combo, swept=["model.num_nb", "model.lr"]) == "run/model.num_nb=5,model.lr=0.001"


def test_rounds_report_table(tmp_path):
    chain = tmp_path / "chain"
    for k, (full, wild) in enumerate([(0.05, 0.10), (0.048, 0.08)]):
        (chain / f"round_{k}").mkdir(parents=True)
        results = {"d_full": {"nme_io": full, "fr@0.10": 0.0, "auc@0.10": 0.5}, "d_wild": {"nme_io": wild}}
        task = "std" if k == 0 else "cls3"
        (chain / f"round_{k}" / "done.json").write_text(json.dumps({"task": task, "results": results}))
    json_path, md_path = write_rounds_report(chain, 5)
    rows = json.loads(json_path.read_text())["rounds"]
    assert [(r["round"], r["task"]) for r in rows] == [(0, "std"), (1, "cls3")]
    lines = md_path.read_text().splitlines()
    assert lines[2].startswith(
        "| round | task | d_full nme_io | d_full fr@0.10 | d_full auc@0.10 | d_wild nme_io"
    )
    assert lines[4].startswith("| 0 | std | 5.00 | 0.00 | 0.5000 | 10.00")
    assert lines[5].startswith("| 1 | cls3 | 4.80 | 0.00 | 0.5000 | 8.00")


def tiny_chain_command(*extra: str) -> list[str]:
    """Run from the working folder as a user does (no paths.root_dir: data/ and outputs/ land there)."""
    return [
        sys.executable, "-m", "pipnet_lit.train", *TINY_SSL, "trainer.log_every_n_steps=1",
        "trainer.check_val_every_n_epoch=1", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_ablation_multirun_runs_each_chain_to_its_own_end_and_summarizes_seeds(tmp_path):
    """The README's ablation, as a smoke chain: ssl=curriculum,nocurriculum x seed=0,1 = 4 chains of 6 and 4
    rounds in one basic-launcher multirun; stage k runs round k of every chain that has one; the seed
    summary is written when the last stage ends; the same command then resumes (nothing to do), and the
    same chains with another learning rate are refused before anything runs."""
    cmd = tiny_chain_command("ssl=curriculum,nocurriculum", "seed=0,1", "+debug=fast")
    result = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    base = tmp_path / "outputs" / "train" / "synthetic_ssl"
    schedules = {"curriculum": ["cls3", "cls2", "std", "std", "std"], "nocurriculum": ["std", "std", "std"]}
    done = {}
    for variant, schedule in schedules.items():
        for seed in (0, 1):
            chain = base / f"ssl={variant},seed={seed}"
            rounds = json.loads((chain / "rounds.json").read_text())["rounds"]
            assert [(r["round"], r["task"]) for r in rounds] == list(enumerate(["std", *schedule]))
            assert not (chain / f"round_{len(schedule) + 1}").exists()
            record = json.loads((chain / "chain.json").read_text())
            assert record["swept"] == [f"ssl={variant}", f"seed={seed}"] and record["schedule"] == schedule
            assert record["config"]["seed"] == seed
            for k in range(len(schedule) + 1):
                done[(variant, seed, k)] = json.loads((chain / f"round_{k}" / "done.json").read_text())
    for k in range(1, 6):  # stage k starts when every chain's round k - 1 has finished
        finished = [d["finished_at"] for (_, _, j), d in done.items() if j == k - 1]
        started = [d["started_at"] for (_, _, j), d in done.items() if j == k]
        assert max(finished) <= min(started), k
    summary = base / "summary"
    md = (summary / "seeds.md").read_text()
    assert (
        "| ssl=curriculum | 0, 1 | 0, 1, 2, 3, 4, 5 |" in md
        and "| ssl=nocurriculum | 0, 1 | 0, 1, 2, 3 |" in md
    )
    assert "fewer than 3" in md  # two seeds are flagged
    rows = list(csv.DictReader((summary / "seeds.csv").open()))
    wild = [
        r
        for r in rows
        if r["subset"] == "synthetic_ssl_wild" and r["metric"] == "nme_io" and r["round"] == "5"
    ]
    values = [done[("curriculum", s, 5)]["results"]["synthetic_ssl_wild"]["nme_io"] for s in (0, 1)]
    assert len(wild) == 1 and float(wild[0]["mean"]) == pytest.approx(np.mean(values))
    assert float(wild[0]["std"]) == pytest.approx(np.std(values, ddof=1))
    assert (summary / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for k in range(6):
        assert f"stage {k}: every chain's round {k} is done, skipped" in again.stdout + again.stderr
    changed = subprocess.run(
        [*cmd, "model.lr=2e-4"], cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900
    )
    assert changed.returncode != 0
    assert "model.lr: 0.001 -> 0.0002" in changed.stderr and "run_name=<new name>" in changed.stderr


@pytest.mark.slow
def test_ddp_sim_chain_gives_the_rounds_of_one_process(tmp_path):
    """trainer=ddp_sim: a 3-round chain in 2 CPU processes ends with the rounds.json of 1 process.

    What differs between 1 and 2 processes is training itself (each process normalizes BatchNorm over its
    half of the batch; SyncBatchNorm needs GPUs), so these rounds train no step (limit_train_batches=0):
    each round's freshly seeded network is tested, pseudo-labels the pool for the next, and its weights
    are saved for it. What is checked is the multi-process chain: pseudo-labels made once by the launching
    process (rank 0) before the workers start, test results gathered over both, one done marker and
    manifest per round, the rounds files.
    """
    from hydra_job import compose_job
    from pipnet_lit.train import train

    same = ["ssl.schedule=[std,std]", "trainer.max_epochs=1", "+trainer.limit_train_batches=0"]
    one = tmp_path / "one"
    for k in range(3):
        args = tiny_chain_command(*same, f"ssl.round={k}", "ssl.chain=one")[3:]
        train(compose_job("train", args, tmp_path, output_dir=one / f"round_{k}"))
    cmd = tiny_chain_command(*same, "trainer=ddp_sim", "run_name=two")
    result = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "outputs" / "train" / "two"
    assert result.stdout.count("pseudo-labelled 6/6 faces") == 2  # rounds 1 and 2, once each
    rounds_one = json.loads((one / "rounds.json").read_text())["rounds"]
    rounds_two = json.loads((two / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds_two] == [0, 1, 2]
    for a, b in zip(rounds_one, rounds_two, strict=True):
        assert a["task"] == b["task"] and set(a["results"]) == set(b["results"])
        for subset, values in a["results"].items():
            for key, value in values.items():
                assert b["results"][subset][key] == pytest.approx(value, abs=1e-6), (a["round"], subset, key)
        for key, value in (a["pseudo_labels"] or {}).items():
            assert b["pseudo_labels"][key] == pytest.approx(value, abs=1e-6), (a["round"], key)


def test_ddp_that_reruns_the_command_is_refused_inside_a_chain(tmp_path):
    """trainer=ddp outside SLURM / torchrun re-runs the command line for its other processes: inside a chain
    (a multirun) that would restart the whole chain in each, so a round refuses it before training."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from hydra_job import compose_job
    from pipnet_lit.ssl.chain import check_launch

    cfg = compose_job(
        "train",
        ["+experiment=synthetic_ssl", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
        tmp_path,
        keep_hydra=True,
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert HydraConfig.get().mode.name == "MULTIRUN"
    with pytest.raises(
        RuntimeError, match=r"trainer=ddp outside SLURM / torchrun .* trainer.strategy=ddp_spawn"
    ):
        check_launch(trainer)
    spawn = instantiate(cfg.trainer, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    check_launch(spawn)  # ddp_spawn starts its processes from inside the round: allowed
