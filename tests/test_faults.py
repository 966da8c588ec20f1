"""Faults: atomic writes, resuming past a damaged checkpoint, and runs killed at every phase.

The kill tests run the real command in a subprocess with ``PIPNET_KILL_AT=<point>[@n]`` (`pipnet_lit.faults`):
the process SIGKILLs itself at an exact place (half a split cropped, a training step, between a checkpoint's
bytes and its rename, a test step, the pseudo-labelling pass, between the chain's rounds files). The same
command then resumes, and the result must equal an uninterrupted run's exactly: the random generators travel
in the checkpoints (`ResumableRandomState`, the data module's `state_dict`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hydra_job import TINY_SSL, job_env
from pipnet_lit.checkpoints import (
    NoResumableCheckpointError,
    checkpoint_problem,
    find_resume_point,
)
from pipnet_lit.files import atomic_write, atomic_write_text, file_sha256, stale_temporaries

KILLED = -signal.SIGKILL

# -- the pieces ------------------------------------------------------------------------------------------


def _training_checkpoint(path: Path, epoch: int, step: int) -> Path:
    """The keys Lightning restores from, with tiny contents."""
    state = {"state_dict": {"w": torch.zeros(2)}, "optimizer_states": [], "loops": {}}
    torch.save({**state, "epoch": epoch, "global_step": step}, path)
    return path


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "done.json", "old\n")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, fail)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.json"]  # no temporary left behind
    # what a killed writer leaves (the temporary of another process) is found, and never looks like a file
    leftover = tmp_path / f".last.ckpt.tmp-{os.getpid() + 1}"
    leftover.write_bytes(b"partial")
    assert stale_temporaries(tmp_path) == [leftover]
    assert find_resume_point(tmp_path).temporaries == (leftover,)


def test_resume_point_is_the_newest_readable_checkpoint(tmp_path: Path) -> None:
    assert find_resume_point(tmp_path / "none").path is None  # no folder: a fresh run
    assert find_resume_point(tmp_path).path is None  # no checkpoint: a fresh run
    best = _training_checkpoint(tmp_path / "epoch_001.ckpt", 1, 8)
    last = _training_checkpoint(tmp_path / "last.ckpt", 2, 12)
    assert find_resume_point(tmp_path).path == last
    _training_checkpoint(tmp_path / "epoch_002.ckpt", 2, 12)  # same step: last.ckpt first among equals
    assert find_resume_point(tmp_path).path == last
    (tmp_path / "epoch_002.ckpt").unlink()
    # cut in half, as a kill during a non-atomic save or a full disk leaves it
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    point = find_resume_point(tmp_path)
    assert point.path == best
    assert [p.name for p, _ in point.skipped] == ["last.ckpt"]
    assert "cannot read checkpoint" in point.skipped[0][1] and "last.ckpt" in point.skipped[0][1]
    assert point.report() == [
        f"skipped checkpoint last.ckpt: {point.skipped[0][1]}; resuming from epoch_001.ckpt"
    ]
    # a weights-only file (pipnet_lit.convert's, Predictor.save's) cannot resume training
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "converted.ckpt")
    problem, _ = checkpoint_problem(tmp_path / "converted.ckpt")
    assert "not a training checkpoint (no optimizer_states, loops, epoch, global_step)" in problem
    assert checkpoint_problem(best) == (None, (1, 8))
    best.write_bytes(b"")
    with pytest.raises(NoResumableCheckpointError) as err:
        find_resume_point(tmp_path)
    message = str(err.value)
    for name in ("converted.ckpt", "epoch_001.ckpt", "last.ckpt"):
        assert f"  {name}: " in message
    assert "run_name=<new name>" in message


def test_kill_point_kills_at_its_nth_visit_only() -> None:
    code = (
        "from pipnet_lit.faults import kill_point\nfor _ in range(3):\n    kill_point('here')\nprint('alive')"
    )
    run = [sys.executable, "-c", code]
    for spec, alive in (
        ("here@2", False),
        ("here", False),
        ("here@4", True),
        ("elsewhere", True),
        ("", True),
    ):
        result = subprocess.run(run, env=job_env(PIPNET_KILL_AT=spec), capture_output=True, text=True)
        assert (result.returncode, "alive" in result.stdout) == ((0, True) if alive else (KILLED, False)), (
            spec
        )


# -- a training run, killed at every phase ---------------------------------------------------------------


def _train_command(root: Path, run_name: str, *, validate_every_epoch: bool = True) -> list[str]:
    """A tiny `+experiment=synthetic` run of 3 epochs of 4 steps; by default validated every epoch (two
    checkpoints a validated epoch: more kill points), else as the demo ships (one validation, at the end)."""
    every = ["trainer.check_val_every_n_epoch=1"] if validate_every_epoch else []
    return [*_demo_command(root, run_name), *every]


def _demo_command(root: Path, run_name: str) -> list[str]:
    return [
        sys.executable, "-m", "pipnet_lit.train", "+experiment=synthetic", f"paths.root_dir={root}",
        f"run_name={run_name}", "ckpt_path=last", f"data.root={root / 'data'}",
        f"data.cache_dir={root / ('cache_' + run_name)}",
        "data.sources.synthetic.n_train=8", "data.sources.synthetic.n_common=3",
        "data.sources.synthetic.n_challenge=2", "data.sources.synthetic.n_wild=0",
        "data.sources.synthetic.image_size=80", "data.input_size=64", "data.batch_size=2",
        "data.eval_batch_size=8", "data.num_workers=0", "model.pretrained=false",
        "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "trainer.max_epochs=3",
    ]  # fmt: skip


def _run(cmd: list[str], cwd: Path, kill_at: str = "") -> subprocess.CompletedProcess:
    env = job_env(PIPNET_KILL_AT=kill_at, WANDB_DIR=str(cwd / "wandb"))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_training_killed_at_every_phase_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = _run(_train_command(tmp_path, "reference"), tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "train" / "faulty"
    checkpoints = run_dir / "checkpoints"
    cmd = _train_command(tmp_path, "faulty")
    # 3 epochs of 4 steps; 2 saves per improving epoch (epoch_XXX.ckpt, last.ckpt)
    for kill_at in ("prepare", "train_batch@6", "checkpoint_save@2", "train_batch@4", "test"):
        result = _run(cmd, tmp_path, kill_at)
        assert result.returncode == KILLED, f"{kill_at}: {result.stderr[-3000:]}"
        assert not (run_dir / "test_metrics.json").exists(), kill_at
        if kill_at == "test":  # the run after the damage: resumed from the previous checkpoint, said so
            log = result.stdout + result.stderr
            assert "skipped checkpoint last.ckpt: cannot read checkpoint" in log
            assert "moved the unusable last.ckpt aside to last.ckpt.damaged" in log
            assert (checkpoints / "last.ckpt.damaged").is_file()
        if kill_at == "prepare":  # half the crops on disk, no manifest: the split does not read as prepared
            caches = list((tmp_path / "cache_faulty").rglob("manifest.json"))
            assert not caches and list((tmp_path / "cache_faulty").rglob("*.png"))
        if kill_at == "checkpoint_save@2":  # killed between the bytes and the rename: the old file stands
            assert stale_temporaries(checkpoints)
            assert checkpoint_problem(checkpoints / "last.ckpt")[0] is None
        if kill_at == "train_batch@4":  # and a full disk cut the last checkpoint short
            data = (checkpoints / "last.ckpt").read_bytes()
            (checkpoints / "last.ckpt").write_bytes(data[: len(data) // 3])
    final = _run(cmd, tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    expected = json.loads((tmp_path / "outputs" / "train" / "reference" / "test_metrics.json").read_text())
    assert json.loads((run_dir / "test_metrics.json").read_text()) == expected  # exactly
    assert not stale_temporaries(checkpoints)
    names = sorted(p.name for p in checkpoints.iterdir())
    assert not [n for n in names if n.startswith("last-v")], names  # one last.ckpt, never last-v1.ckpt
    ckpt = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    assert ckpt["global_step"] == 12  # last.ckpt is the final epoch's model (3 epochs of 4 steps)
    # nothing readable left: the message names each file and how to start afresh
    for path in checkpoints.glob("*.ckpt"):
        path.write_bytes(b"")
    failed = _run([*cmd, "trainer.max_epochs=4"], tmp_path)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "no checkpoint in" in failed.stderr and "run_name=<new name>" in failed.stderr


@pytest.mark.slow
def test_demo_validating_once_resumes_a_run_killed_before_its_last_epoch(tmp_path: Path) -> None:
    """The demo validates only at the end; every epoch still leaves a last.ckpt to resume from."""
    reference = _run(_train_command(tmp_path, "reference", validate_every_epoch=False), tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    cmd = _train_command(tmp_path, "faulty", validate_every_epoch=False)
    killed = _run(cmd, tmp_path, "train_batch@10")  # in the third and last epoch, the only validated one
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    checkpoints = tmp_path / "outputs" / "train" / "faulty" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]  # no validation yet: no top-k file
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 8
    resumed = _run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    expected = json.loads((tmp_path / "outputs" / "train" / "reference" / "test_metrics.json").read_text())
    assert json.loads((checkpoints.parent / "test_metrics.json").read_text()) == expected  # exactly


# -- a self-training chain, killed at every phase --------------------------------------------------------


@pytest.mark.slow
def test_chain_killed_at_every_phase_ends_as_an_uninterrupted_chain(tmp_path: Path) -> None:
    def command(name: str) -> list[str]:
        return [
            sys.executable, "-m", "pipnet_lit.train", *TINY_SSL, "ssl.schedule=[cls3,std]",
            "trainer.max_epochs=1", f"run_name={name}", f"paths.root_dir={tmp_path}",
            f"data.root={tmp_path / 'data'}",
        ]  # fmt: skip

    reference = _run(command("reference"), tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    chain = tmp_path / "outputs" / "train" / "faulty"
    cmd = command("faulty")
    # round 1's pseudo-labels, a step of round 1 (before its first checkpoint: the round starts again with
    # the pseudo-labels it made), the summary after round 1's rounds.json (a resume from a checkpoint
    # mid-round is the training test's; a chain round resumes through the same code)
    for kill_at in ("pseudo_labels", "train_batch@3", "rounds_files@1"):
        result = _run(cmd, tmp_path, kill_at)
        assert result.returncode == KILLED, f"{kill_at}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    finished = [chain / "round_0" / "done.json", chain / "round_0" / "checkpoints" / "last.ckpt"]
    finished += [chain / "round_1" / "done.json", chain / "round_1" / "checkpoints" / "last.ckpt"]
    before = [path.stat().st_mtime_ns for path in finished]
    final = _run(cmd, tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    # the sweeper skips finished stages without launching them; finished rounds are left as they were
    assert "stage 0: every chain's round 0 is done, skipped" in final.stdout
    assert "stage 1: every chain's round 1 is done, skipped" in final.stdout
    assert [path.stat().st_mtime_ns for path in finished] == before
    # round 1's pseudo-labels: the whole pool, task cls3, from round 0's final model (by its recorded hash)
    manifest1 = json.loads((chain / "round_1" / "pseudo_labels" / "manifest.json").read_text())
    assert manifest1["task"] == "cls3" and manifest1["count"] == manifest1["count_pool"] == 6
    assert manifest1["checkpoint_sha256"] == file_sha256(chain / "round_0" / "checkpoints" / "last.ckpt")
    labels = json.loads((chain / "round_2" / "pseudo_labels" / "manifest.json").read_text())
    assert labels["task"] == "std" and labels["checkpoint"].endswith("round_1/checkpoints/last.ckpt")

    def results(name: str) -> list[tuple[int, str, dict]]:
        rounds = json.loads((tmp_path / "outputs" / "train" / name / "rounds.json").read_text())["rounds"]
        return [(r["round"], r["task"], r["results"]) for r in rounds]

    assert [r[:2] for r in results("faulty")] == [(0, "std"), (1, "cls3"), (2, "std")]
    assert results("faulty") == results("reference")  # exactly
    assert (chain / "rounds.md").is_file()
