"""A self-training chain's state on disk and its faults: the layout module, the chain's own config,
pseudo-label reuse keys and diagnostics, and what a round does with a damaged or partial chain (rounds run
in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hydra_job import TINY_SSL, compose_job
from pipnet_lit.datasets.cache import read_split
from pipnet_lit.datasets.records import DataFormatError
from pipnet_lit.ssl.chain_config import ChainConfigError, check_chain_config, config_diff, defining_config
from pipnet_lit.ssl.layout import (
    RoundState,
    default_checkpoint,
    is_done,
    read_done,
    recorded_checkpoint,
    round_dir,
    round_state,
)

#: One worker runs this module under pytest-xdist (make test: --dist loadgroup), so the chain every test
#: copies is trained once.
pytestmark = pytest.mark.xdist_group("ssl_chain")

TINY = [*TINY_SSL, "trainer.max_epochs=1", "ssl.schedule=[cls2]"]


def round_cfg(data: Path, chain: Path, k: int, *extra: str):
    """Round k of the chain in folder ``chain`` as the sweeper would hand it to its job (in-process)."""
    overrides = [
        *TINY, f"data.root={data}", f"data.cache_dir={data / 'cache'}", f"ssl.round={k}",
        f"ssl.chain={chain.name}", *extra,
    ]  # fmt: skip
    return compose_job("train", overrides, chain.parent, output_dir=round_dir(chain, k))


def run(data: Path, chain: Path, k: int, *extra: str):
    from pipnet_lit.train import train

    return train(round_cfg(data, chain, k, *extra))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ssl-data")


@pytest.fixture(scope="module")
def base_chain(data_root, tmp_path_factory) -> Path:
    """Round 0 and a cls2 round 1 of a tiny chain, trained once for this module's tests to copy."""
    chain = tmp_path_factory.mktemp("chains") / "base"
    run(data_root, chain, 0)
    run(data_root, chain, 1)
    return chain


def copy_chain(base: Path, tmp_path: Path, name: str = "chain", rounds: tuple[int, ...] = (0, 1)) -> Path:
    chain = tmp_path / name
    chain.mkdir()
    for k in rounds:
        shutil.copytree(round_dir(base, k), round_dir(chain, k))
    shutil.copy(base / "chain.json", chain / "chain.json")
    return chain


def test_layout_round_states(tmp_path):
    folder = round_dir(tmp_path, 3)
    assert folder == tmp_path / "round_3" and round_state(folder) is RoundState.MISSING
    folder.mkdir()
    (folder / "done.json").write_text('{"round": 3, "task": "st')  # cut short by a kill or a full disk
    assert round_state(folder) is RoundState.DAMAGED and not is_done(folder)
    (folder / "done.json").write_text("[1, 2]")  # JSON, but not a done record
    assert round_state(folder) is RoundState.DAMAGED
    (folder / "done.json").write_text('{"round": 3}')
    assert round_state(folder) is RoundState.DONE and read_done(folder) == {"round": 3}
    # the final model: the manifest's record (relative to the round folder), else checkpoints/last.ckpt
    assert recorded_checkpoint(folder) == default_checkpoint(folder) == folder / "checkpoints" / "last.ckpt"
    (folder / "manifest.json").write_text(json.dumps({"wrote": {"checkpoint": "final/model.ckpt"}}))
    assert recorded_checkpoint(folder) == folder / "final" / "model.ckpt"
    (folder / "manifest.json").write_text(json.dumps({"wrote": {"checkpoint": "/elsewhere/m.ckpt"}}))
    assert recorded_checkpoint(folder) == Path("/elsewhere/m.ckpt")


def test_defining_config_leaves_out_round_paths_and_loggers(tmp_path):
    a = round_cfg(tmp_path / "d", tmp_path / "c", 0)
    b = round_cfg(tmp_path / "d", tmp_path / "c", 1, "logger=many", "paths.root_dir=/other")
    da, db = defining_config(a), defining_config(b)
    assert da == db  # round number, run folder, loggers and paths do not define a chain
    assert not any(k.startswith(("paths.", "hydra.", "logger.")) or k == "ssl.round" for k in da)
    assert da["trainer.default_root_dir"] == "<paths.output_dir>"  # built from a path: a placeholder
    assert da["ssl.schedule"] == ["cls2"] and da["model.lr"] == 0.001 and da["seed"] == 42
    c = defining_config(round_cfg(tmp_path / "d", tmp_path / "c", 0, "model.lr=2e-4", "seed=3"))
    assert config_diff(da, c) == [("model.lr", 0.001, 0.0002), ("seed", 42, 3)]


def test_chain_config_is_recorded_then_refused_with_the_key_diff(tmp_path):
    chain = tmp_path / "run"
    base = defining_config(round_cfg(tmp_path, chain, 0))
    check_chain_config(chain, base, chain_name="run", swept=["seed=0"], schedule=["cls2"])
    record = json.loads((chain / "chain.json").read_text())
    assert record["config"] == base and record["swept"] == ["seed=0"] and record["schedule"] == ["cls2"]
    check_chain_config(chain, base)  # the same config: nothing to say
    other = dict(base, **{"model.lr": 0.0002})
    with pytest.raises(ChainConfigError) as err:
        check_chain_config(chain, other)
    message = str(err.value)
    assert "model.lr: 0.001 -> 0.0002" in message and "1 key(s)" in message
    assert "run_name=<new name>" in message and "ssl.allow_config_change=true" in message
    assert json.loads((chain / "chain.json").read_text())["config"] == base  # nothing recorded
    check_chain_config(chain, other, allow_change=True)
    record = json.loads((chain / "chain.json").read_text())
    assert record["config"]["model.lr"] == 0.0002
    assert record["changes"][0]["diff"] == [["model.lr", 0.001, 0.0002]]
    (chain / "chain.json").write_text("{not json")
    with pytest.raises(ChainConfigError, match="cannot be read"):
        check_chain_config(chain, base)


def test_pseudo_label_key_follows_model_pool_and_settings(tmp_path):
    from pipnet_lit.ssl.chain import pseudo_label_key

    cfg = round_cfg(tmp_path, tmp_path / "c", 1)
    key = pseudo_label_key(cfg, "sha-a", "pool-a", "cls2")
    assert key == {
        "checkpoint_sha256": "sha-a",
        "pool": "pool-a",
        "settings": {"task": "cls2", "threshold": None, "top_fraction": None, "merge": True},
    }
    changed = lambda *extra: round_cfg(tmp_path, tmp_path / "c", 1, *extra)  # noqa: E731
    others = [
        pseudo_label_key(cfg, "sha-b", "pool-a", "cls2"),
        pseudo_label_key(cfg, "sha-a", "pool-b", "cls2"),
        pseudo_label_key(cfg, "sha-a", "pool-a", "std"),
        pseudo_label_key(changed("ssl.pseudo_labels.threshold=0.5"), "sha-a", "pool-a", "cls2"),
        pseudo_label_key(changed("ssl.pseudo_labels.top_fraction=0.5"), "sha-a", "pool-a", "cls2"),
        pseudo_label_key(changed("model.merge=false"), "sha-a", "pool-a", "cls2"),
    ]
    assert all(other != key for other in others)


@pytest.mark.slow
def test_round_records_its_model_and_scores_pseudo_labels_against_the_truth(base_chain, data_root):
    r0, r1 = round_dir(base_chain, 0), round_dir(base_chain, 1)
    manifest0 = json.loads((r0 / "manifest.json").read_text())
    assert manifest0["wrote"]["checkpoint"] == "checkpoints/last.ckpt"  # relative: the chain can move
    labels_manifest = json.loads((r1 / "pseudo_labels" / "manifest.json").read_text())
    from pipnet_lit.ssl.pseudo_labels import file_sha256

    assert labels_manifest["key"]["checkpoint_sha256"] == file_sha256(r0 / "checkpoints" / "last.ckpt")
    assert labels_manifest["key"]["settings"]["task"] == "cls2"
    # the diagnostics, recomputed independently from the files: pseudo-labels vs the pool's cached truth
    diag = json.loads((r1 / "pseudo_labels" / "diagnostics.json").read_text())
    pool = read_split(data_root / "cache" / "synthetic_ssl" / "wild_64px")
    from pipnet_lit.datasets.pseudo_labels import read_pseudo_labels

    labels = read_pseudo_labels(r1 / "pseudo_labels")
    truth = pool.landmarks[[pool.names.index(n) for n in labels.names]]
    pred = labels.landmarks
    iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
    nme = (np.linalg.norm(pred - truth, axis=2).mean(axis=1) / iod).mean()
    assert diag["nme"] == pytest.approx(nme, rel=1e-6)
    grid = 64 // 16 // 2  # cls2: the 2x coarser map of the 4x4 grid
    cells = lambda p: np.clip(np.floor(p * grid), 0, grid - 1)  # noqa: E731
    hit = (cells(pred) == cells(truth)).all(axis=2).mean()
    assert diag["task_grid"] == "2x2" and diag["task_cell_hit"] == pytest.approx(hit)
    done1 = read_done(r1)
    assert done1["pseudo_labels"]["pl_nme"] == pytest.approx(nme, rel=1e-6)
    rounds = json.loads((base_chain / "rounds.json").read_text())["rounds"]
    assert rounds[0]["pseudo_labels"] is None and rounds[1]["pseudo_labels"]["pl_cell_hit"] == pytest.approx(
        hit
    )
    assert "pl_nme" in (base_chain / "rounds.md").read_text()
    assert (r1 / "pseudo_labels" / "confidence_vs_error.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_changed_config_is_refused_even_for_a_finished_round(base_chain, data_root, tmp_path):
    chain = copy_chain(base_chain, tmp_path)
    before = read_done(round_dir(chain, 0))
    with pytest.raises(ChainConfigError, match=r"model.lr: 0.001 -> 0.0002"):
        run(data_root, chain, 0, "model.lr=2e-4")  # never reported as this config's round 0
    metrics, objects = run(data_root, chain, 0)  # the chain's own config: skipped, its recorded metrics
    assert objects["skipped"] and metrics == before["metrics"]


@pytest.mark.slow
def test_damaged_done_marker_retests_the_round_from_its_own_model(base_chain, data_root, tmp_path):
    chain = copy_chain(base_chain, tmp_path)
    r1 = round_dir(chain, 1)
    before = read_done(r1)
    ckpt = r1 / "checkpoints" / "last.ckpt"
    mtime = ckpt.stat().st_mtime_ns
    (r1 / "done.json").write_text('{"round": 1, "res')
    with pytest.warns(UserWarning, match="cannot be read: round 1 re-tests its own final model"):
        run(data_root, chain, 1)
    after = read_done(r1)
    assert after is not None and ckpt.stat().st_mtime_ns == mtime  # tested, not trained again
    for subset, values in before["results"].items():
        for key, value in values.items():
            assert after["results"][subset][key] == pytest.approx(value, abs=1e-9), (subset, key)


@pytest.mark.slow
def test_next_round_reads_the_model_its_predecessor_recorded(base_chain, data_root, tmp_path):
    chain = copy_chain(base_chain, tmp_path, rounds=(0,))
    r0 = round_dir(chain, 0)
    moved = tmp_path / "kept" / "round0.ckpt"
    moved.parent.mkdir()
    shutil.move(r0 / "checkpoints" / "last.ckpt", moved)
    manifest = json.loads((r0 / "manifest.json").read_text())
    manifest["wrote"]["checkpoint"] = str(moved)
    (r0 / "manifest.json").write_text(json.dumps(manifest))
    run(data_root, chain, 1)
    labels = json.loads((round_dir(chain, 1) / "pseudo_labels" / "manifest.json").read_text())
    assert labels["checkpoint"] == str(moved) and is_done(round_dir(chain, 1))


@pytest.mark.slow
def test_round_with_its_pseudo_labels_resumes_without_the_previous_model(base_chain, data_root, tmp_path):
    chain = copy_chain(base_chain, tmp_path)
    r1 = round_dir(chain, 1)
    for ckpt in (round_dir(chain, 0) / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()
    (r1 / "done.json").unlink()
    shutil.rmtree(r1 / "checkpoints")
    written = json.loads((r1 / "pseudo_labels" / "manifest.json").read_text())["written"]
    run(data_root, chain, 1)
    assert json.loads((r1 / "pseudo_labels" / "manifest.json").read_text())["written"] == written  # reused
    assert is_done(r1) and (r1 / "checkpoints" / "last.ckpt").is_file()
    # without pseudo-labels and without the model, the round says what is missing
    (r1 / "done.json").unlink()
    shutil.rmtree(r1 / "pseudo_labels")
    with pytest.raises(FileNotFoundError, match=r"need round 0's final model .*last.ckpt, which is missing"):
        run(data_root, chain, 1)


@pytest.mark.slow
def test_corrupt_pseudo_label_file_is_an_error_naming_file_and_line(base_chain, data_root, tmp_path):
    chain = copy_chain(base_chain, tmp_path)
    r1 = round_dir(chain, 1)
    (r1 / "done.json").unlink()
    shutil.rmtree(r1 / "checkpoints")
    path = r1 / "pseudo_labels" / "annotations.txt"
    lines = path.read_text().splitlines()
    tokens = lines[1].split()
    lines[1] = " ".join([tokens[0], "0.5", "abc", *tokens[3:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"annotations.txt:2: non-numeric coordinate 'abc'"):
        run(data_root, chain, 1)
    assert not is_done(r1)


@pytest.mark.slow
def test_a_filter_that_keeps_no_face_stops_the_round(base_chain, data_root, tmp_path):
    chain = copy_chain(base_chain, tmp_path, rounds=(0,))
    with pytest.raises(RuntimeError, match=r"keeps none of the pool's 6 faces.*allow_empty=true"):
        run(data_root, chain, 1, "ssl.pseudo_labels.threshold=1e9", "ssl.allow_config_change=true")
    assert not is_done(round_dir(chain, 1))
    run(
        data_root, chain, 1, "ssl.pseudo_labels.threshold=1e9", "ssl.pseudo_labels.allow_empty=true",
        "ssl.allow_config_change=true",
    )  # fmt: skip
    manifest = json.loads((round_dir(chain, 1) / "manifest.json").read_text())
    assert manifest["train_faces"] == 8  # the labeled faces alone
    changes = json.loads((chain / "chain.json").read_text())["changes"]
    assert [d[0] for d in changes[0]["diff"]] == ["ssl.pseudo_labels.threshold"]


def test_other_ranks_wait_for_rank_zeros_pseudo_labels_or_its_failure(tmp_path):
    """A process other than rank 0 waits for pseudo-labels with the round's key; when rank 0 fails, it
    stops with rank 0's reason instead of holding its GPU until the timeout."""
    import threading

    from pipnet_lit.datasets.pseudo_labels import write_pseudo_labels
    from pipnet_lit.files import write_json_atomic
    from pipnet_lit.ssl.chain import FAILED_NAME, _wait_for

    folder, key = tmp_path / "pl", {"checkpoint_sha256": "a", "pool": "p", "settings": {}}
    lms, scores = np.zeros((1, 2, 2)), np.ones(1)
    write_pseudo_labels(folder, ["x"], lms, scores, {"key": {**key, "pool": "old"}})  # another key: wait on
    timer = threading.Timer(0.3, lambda: write_pseudo_labels(folder, ["x"], lms, scores, {"key": key}))
    timer.start()
    assert _wait_for(folder, key, timeout=20, poll=0.05) == folder
    timer.join()
    other = {**key, "checkpoint_sha256": "b"}
    write_json_atomic(folder / FAILED_NAME, {"key": other, "error": "RuntimeError: keeps none"})
    with pytest.raises(
        RuntimeError, match="rank 0 failed to make the pseudo-labels .*: RuntimeError: keeps none"
    ):
        _wait_for(folder, other, timeout=20, poll=0.05)
    with pytest.raises(TimeoutError, match="did not write the pseudo-labels"):
        _wait_for(folder, {**key, "pool": "never"}, timeout=0.2, poll=0.05)
