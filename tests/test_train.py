"""End to end: every experiment's fast_dev_run, a real short fit with resume, evaluation, prediction."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_job import compose_job
from pipnet_lit.config import CONFIG_DIR
from pipnet_lit.ssl.layout import recorded_checkpoint
from pipnet_lit.synthetic import generate_dataset
from pipnet_lit.train import train

REPO = Path(__file__).parents[1]
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
W300_FOLDERS = {
    "afw": "trainset",
    "helen/trainset": "trainset",
    "lfpw/trainset": "trainset",
    "helen/testset": "common",
    "lfpw/testset": "common",
    "ibug": "challenge",
}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The synthetic download's folder, `<data.root>/synthetic`."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_dataset(root, n_train=6, n_common=3, n_challenge=2, n_wild=2, image_size=96, seed=1)
    return root


@pytest.fixture(scope="session")
def w300_root(synthetic_root, tmp_path_factory) -> Path:
    """The synthetic faces laid out as the real 300W download (`<data.root>/300W/afw/`, ...)."""
    root = tmp_path_factory.mktemp("w300data") / "300W"
    for folder, source in W300_FOLDERS.items():
        shutil.copytree(synthetic_root / source, root / folder)
    return root


@pytest.fixture(scope="session")
def raw_root(tmp_path_factory) -> Path:
    """A data.root with every download in its exact on-disk format (300W, WFLW, COFW(68), AFLW, CelebA)."""
    from pipnet_lit.synthetic.raw import write_raw_downloads

    root = tmp_path_factory.mktemp("raw")
    write_raw_downloads(root, n=2, image_size=96, seed=2)
    return root


def tiny_overrides(root: Path, workdir: Path) -> list[str]:
    """`root` is one download's folder; data.root is the folder holding it."""
    return [
        f"data.root={root.parent}",
        f"data.cache_dir={workdir / 'cache'}",
        "data.input_size=64",
        "data.batch_size=2",
        "data.eval_batch_size=16",  # fast_dev_run scores one batch: every subset must be in it
        "data.num_workers=0",
        "++data.sources.synthetic=null",  # every experiment: set or add (an empty sources map)
        "model.pretrained=false",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
    ]


EXPECTED_SUBSETS = {
    "300w": {"300w_full", "300w_common", "300w_challenge"},
    "wflw": {
        f"wflw_{s}" for s in ("full", "pose", "expression", "illumination", "makeup", "occlusion", "blur")
    },
    "cofw": {"cofw_full"},
    "aflw": {"aflw_full"},
    "synthetic": {"synthetic_full", "synthetic_common", "synthetic_challenge"},
    "300w_celeba": {"300w_celeba_300w_full", "300w_celeba_cofw68", "300w_celeba_wflw68"},
    "300w_cofw_wflw": {"300w_cofw_wflw_300w_full", "300w_cofw_wflw_cofw68", "300w_cofw_wflw_wflw68"},
    "synthetic_ssl": {"synthetic_ssl_full", "synthetic_ssl_wild"},
}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(experiment, synthetic_root, raw_root, tmp_path):
    """Every config composes and runs one batch of train / val / test on raw files in the real formats.

    A self-training experiment runs every round of its chain (a smoke chain): each round hands the next
    one a model although a fast_dev_run writes no checkpoint, and is only marked done with it. Crops are
    cached once per session for all experiments.
    """
    root = synthetic_root if experiment == "synthetic" else raw_root / "300W"
    cfg = compose_job("train", [f"+experiment={experiment}"], tmp_path)
    stride = cfg.model.net_stride
    size = max(
        64, 2 * stride, 2**cfg.model.coarse_levels * stride
    )  # a grid >= 2x2 that the coarse maps divide
    overrides = [
        f"+experiment={experiment}", "+debug=fast", *tiny_overrides(root, tmp_path),
        f"data.input_size={size}", f"data.cache_dir={raw_root / 'cache'}",
    ]  # fmt: skip
    if experiment.startswith("synthetic_ssl"):  # its own generated folder (with the labeled wild test split)
        overrides += [
            f"data.root={raw_root}",
            "data.sources.synthetic_ssl={n_train: 4, n_common: 2, n_challenge: 1, n_wild: 3, n_wild_test: 2, "
            "image_size: 80, seed: 0}",
        ]  # fmt: skip
    if experiment.startswith("aflw"):  # the tiny AFLW file has 6 faces, not 24386: split them 4 / 2
        overrides.append("data.split_overrides={train: {split_point: 4}, test: {split_point: 4}}")
    schedule = list(cfg.ssl.schedule) if cfg.get("ssl") is not None else None
    if schedule is None:
        cfg = compose_job("train", overrides, tmp_path)
        metrics, objects = train(cfg)
        assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))  # a smoke run writes no checkpoint
        check_fast_dev_metrics(metrics, objects["datamodule"])
        return
    chain = tmp_path / "chain"
    for k in range(len(schedule) + 1):
        cfg = compose_job(
            "train",
            [*overrides, f"ssl.round={k}", "ssl.chain=chain"],
            tmp_path,
            output_dir=chain / f"round_{k}",
        )
        metrics, objects = train(cfg)
        check_fast_dev_metrics(metrics, objects["datamodule"])
        done = json.loads((chain / f"round_{k}" / "done.json").read_text())
        assert done["task"] == (schedule[k - 1] if k else "std")
        # the next round's model: the weights of a fast_dev_run, which saves no checkpoint of its own
        assert (
            recorded_checkpoint(chain / f"round_{k}")
            == chain / f"round_{k}" / "checkpoints" / "final_weights.ckpt"
        )
        assert recorded_checkpoint(chain / f"round_{k}").is_file()
        assert not (chain / f"round_{k}" / "checkpoints" / "last.ckpt").exists()  # nothing to resume from
        if k:
            labels = json.loads((chain / f"round_{k}" / "pseudo_labels" / "manifest.json").read_text())
            assert labels["count"] == labels["count_pool"] > 0 and labels["task"] == schedule[k - 1]
            # the pool's true landmarks score its pseudo-labels where it has them (the synthetic wild
            # pool); CelebA has boxes only and COFW / WFLW train use other landmark schemes: no diagnostics
            labeled_pool = experiment.startswith("synthetic_ssl")
            assert (done["pseudo_labels"] is not None) == labeled_pool
            assert (chain / f"round_{k}" / "pseudo_labels" / "diagnostics.json").is_file() == labeled_pool
    rounds = json.loads((chain / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == list(range(len(schedule) + 1))


def check_fast_dev_metrics(metrics: dict, dm) -> None:
    assert np.isfinite(metrics["train/loss"])
    assert set(dm.eval_subset_names) == EXPECTED_SUBSETS[dm.meta.name]
    # one metric per evaluation subset and normalization, named after both
    primary = dm.meta.metrics[0].key
    for name in dm.eval_subset_names:
        assert 0 < metrics[f"test/{name}/{primary}"] < 10, name
        assert 0 <= metrics[f"test/{name}/fr@0.10"] <= 1
        for spec in dm.meta.metrics[1:]:
            assert metrics[f"test/{name}/{spec.key}"] > 0


@pytest.mark.slow
def test_fit_resume_and_evaluate(synthetic_root, tmp_path):
    base = ["+experiment=synthetic", *tiny_overrides(synthetic_root, tmp_path), "data.input_size=64"]
    cfg = compose_job("train", [*base, "trainer.max_epochs=1", "trainer.log_every_n_steps=1"], tmp_path)
    _, objects = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    steps_one_epoch = objects["trainer"].global_step
    assert steps_one_epoch == 3  # 6 training faces, batch 2

    # A second job with the same run name resumes from last.ckpt and trains one more epoch.
    cfg = compose_job(
        "train", [*base, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "ckpt_path=last"], tmp_path
    )
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2 * steps_one_epoch
    assert objects["trainer"].current_epoch == 2
    results = json.loads((run_dir / "test_metrics.json").read_text())
    assert set(results) == {"synthetic_full", "synthetic_common", "synthetic_challenge"}
    assert results["synthetic_common"]["nme_io"] == pytest.approx(metrics["test/synthetic_common/nme_io"])
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    # the resumed job appended to the killed job's log: validation rows of both epochs are there
    assert sorted(r["epoch"] for r in rows if r.get("val/synthetic_common/nme_io")) == ["0", "1"]
    assert sum(1 for r in rows if r.get("train/loss")) == 2 * steps_one_epoch
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # plain data only: loads safely
    meanface = ckpt["state_dict"]["_extra_state"]["meanface"]  # the mean face travels with the weights
    assert meanface.dtype == torch.float64 and tuple(meanface.shape) == (68, 2)
    assert torch.equal(meanface, torch.as_tensor(objects["datamodule"].meanface))

    # Evaluation entry point, as a user runs it, on the test folders alone (no training data needed).
    test_only = tmp_path / "test_only"
    for folder in ("common", "challenge"):
        shutil.copytree(synthetic_root / folder, test_only / "synthetic" / folder)

    preds = tmp_path / "preds.csv"
    result = subprocess.run(
        [
            sys.executable, "-m", "pipnet_lit.eval", f"ckpt_path={last}", f"data.root={test_only}",
            f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0", "data.sources.synthetic=null",
            f"predictions_csv={preds}", f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu",
            "run_name=ev",
        ],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "synthetic_common" in result.stdout and "nme" in result.stdout
    rows = list(csv.reader(preds.open()))
    assert rows[0][:4] == ["subset", "image", "x0", "y0"] and len(rows[0]) == 2 + 2 * 68
    # every image of a multi-folder subset once, under its official crop name
    full = sorted(r[1] for r in rows[1:] if r[0] == "synthetic_full")
    expected = sorted(
        f"{folder}_{p.stem}"
        for folder in ("common", "challenge")
        for p in (test_only / "synthetic" / folder).glob("*.pts")
    )
    assert full == expected and len(full) == 5
    common = sorted(r[1] for r in rows[1:] if r[0] == "synthetic_common")
    assert common == [n for n in expected if n.startswith("common_")] and len(common) == 3
    # the same checkpoint on the same images gives the numbers the training job reported
    evaluated = json.loads((tmp_path / "outputs" / "eval" / "ev" / "test_metrics.json").read_text())
    for subset in ("synthetic_full", "synthetic_common", "synthetic_challenge"):
        assert evaluated[subset]["nme_io"] == pytest.approx(results[subset]["nme_io"], abs=1e-6)


def test_fresh_run_refuses_a_folder_that_holds_a_run(synthetic_root, tmp_path):
    cfg = compose_job("train", ["+experiment=synthetic", *tiny_overrides(synthetic_root, tmp_path)], tmp_path)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="ckpt_path=last.*run_name="):
        train(cfg)


def test_test_only_needs_an_explicit_checkpoint(synthetic_root, tmp_path):
    overrides = ["+experiment=synthetic", *tiny_overrides(synthetic_root, tmp_path), "train=false"]
    with pytest.raises(ValueError, match="test_ckpt=/path/to.ckpt"):
        train(compose_job("train", overrides, tmp_path))


def test_missing_folder_names_the_dataset_layout(synthetic_root, tmp_path):
    from pipnet_lit.datasets.datamodule import LandmarkDataModule

    partial = tmp_path / "partial"
    shutil.copytree(synthetic_root / "common", partial / "synthetic" / "common")
    dm = LandmarkDataModule(meta="synthetic", root=str(partial), cache_dir=str(tmp_path / "c"), input_size=64)
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    # the dataset, the split, the folder it looked in, the expected layout and where to get it
    assert (
        "dataset 'synthetic' (split 'train')" in message
        and str(partial / "synthetic" / "trainset") in message
    )
    assert "expected layout: trainset/, common/, challenge/, wild/" in message
    assert "get it from:" in message and "data.root=" in message
    # evaluation of a checkpoint does not need the training folder, only the test folders
    dm = LandmarkDataModule(
        meta="synthetic", root=str(partial), cache_dir=str(tmp_path / "c"), input_size=64, load_train=False,
        load_unlabeled=False,
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"split 'test'\)(.|\n)*synthetic/challenge"):
        dm.prepare_data()
    # a 300W download missing a folder names the 300W layout and its download page
    dm = LandmarkDataModule(meta="300w", root=str(partial), cache_dir=str(tmp_path / "c"), input_size=64)
    with pytest.raises(FileNotFoundError, match=r"(?s)dataset '300w'.*300W/afw.*ibug\.doc\.ic\.ac\.uk"):
        dm.prepare_data()


@pytest.mark.slow
def test_readme_custom_data_example_trains_and_tests(tmp_path):
    """The README's custom-data example: a table of 5-point faces, its scheme and dataset YAML, trained."""
    from pipnet_lit.synthetic.raw.table import write_table_example

    out = write_table_example(tmp_path / "data" / "mydata")
    overrides = [
        "data=custom", f"data.meta={out['meta']}", "model.num_nb=4", "+debug=fast",
        *tiny_overrides(out["data_root"] / "mydata", tmp_path),
    ]  # fmt: skip
    metrics, objects = train(compose_job("train", overrides, tmp_path))
    dm = objects["datamodule"]
    assert dm.num_landmarks == 5 and objects["model"].hparams.num_landmarks == 5
    assert len(dm.train_set) == 6 and len(dm.eval_sets["mydata_test"]) == 3
    assert dm.train_set.names[0] == "images_0001" and dm.eval_sets["mydata_test"].names[0] == "images_0007"
    assert 0 < metrics["test/mydata_test/nme_io"] < 10 and metrics["test/mydata_test/nme_box"] > 0


def test_val_split_is_a_seeded_hold_out_of_train(synthetic_root, tmp_path):
    from pipnet_lit.datasets.datamodule import LandmarkDataModule

    def make(seed):
        dm = LandmarkDataModule(
            meta="synthetic", root=str(synthetic_root.parent), cache_dir=str(tmp_path / "c"), input_size=64,
            num_workers=0, val_fraction=0.34, val_seed=seed, load_unlabeled=False,
        )  # fmt: skip
        dm.prepare_data()
        dm.setup("fit")
        return dm

    dm = make(0)
    all_train = {f"trainset_synth_{i:05d}" for i in range(6)}
    assert len(dm.val_set) == 2 and len(dm.train_set) == 4  # round(0.34 * 6)
    assert set(dm.val_set.names) | set(dm.train_set.names) == all_train
    assert not set(dm.val_set.names) & set(dm.train_set.names)
    assert dm.val_subset_names == ["synthetic_val"]
    assert dm.evaluation_plan("val").loaders[0].subsets["synthetic_val"].all()
    # test subsets stay the test data; the mean face comes from the training part only
    assert dm.eval_subset_names == ["synthetic_full", "synthetic_common", "synthetic_challenge"]
    kept = [dm.train_set.names.index(n) for n in dm.train_set.names]
    np.testing.assert_allclose(
        dm.meanface, dm.train_set.landmarks[kept].astype(np.float64).mean(0), atol=1e-6
    )
    assert make(0).val_set.names == dm.val_set.names  # seeded
    assert make(1).val_set.names != dm.val_set.names or make(2).val_set.names != dm.val_set.names
