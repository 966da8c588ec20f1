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
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from pipnet_lit.config import CONFIG_DIR
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
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, n_train=6, n_common=3, n_challenge=2, n_wild=0, image_size=96, seed=1)
    return root


@pytest.fixture(scope="session")
def w300_root(synthetic_root, tmp_path_factory) -> Path:
    """The synthetic faces laid out as the real 300W download (afw/, helen/{trainset,testset}/, ...)."""
    root = tmp_path_factory.mktemp("300W")
    for folder, source in W300_FOLDERS.items():
        shutil.copytree(synthetic_root / source, root / folder)
    return root


def tiny_overrides(root: Path, workdir: Path, meta_root_key: str = "data.root") -> list[str]:
    return [
        f"{meta_root_key}={root}",
        f"data.cache_dir={workdir / 'cache'}",
        "data.input_size=64",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "data.synthetic=null",
        "model.pretrained=false",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
    ]


def compose_train(overrides: list[str], workdir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(workdir)
        cfg.paths.output_dir = str(workdir / "outputs" / cfg.run_name)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the job's config has no hydra node
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(experiment, synthetic_root, w300_root, tmp_path):
    root = w300_root if experiment.startswith("300w") else synthetic_root
    overrides = [f"+experiment={experiment}", "+debug=fast", *tiny_overrides(root, tmp_path)]
    cfg = compose_train(overrides, tmp_path)
    metrics, objects = train(cfg)
    dm = objects["datamodule"]
    assert np.isfinite(metrics["train/loss"])
    # one metric per evaluation subset, named after the dataset and the normalization
    for name in dm.eval_subset_names:
        assert 0 < metrics[f"test/{name}/nme_io"] < 10
        assert 0 <= metrics[f"test/{name}/fr@0.10"] <= 1
    expected = {"300w_full", "300w_common", "300w_challenge"} if root == w300_root else {"synthetic_common"}
    assert expected <= set(dm.eval_subset_names)


@pytest.mark.slow
def test_fit_resume_and_evaluate(synthetic_root, tmp_path):
    base = ["+experiment=synthetic", *tiny_overrides(synthetic_root, tmp_path), "data.input_size=64"]
    cfg = compose_train([*base, "trainer.max_epochs=1", "trainer.log_every_n_steps=1"], tmp_path)
    _, objects = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    steps_one_epoch = objects["trainer"].global_step
    assert steps_one_epoch == 3  # 6 training faces, batch 2

    # A second job with the same run name resumes from last.ckpt and trains one more epoch.
    cfg = compose_train(
        [*base, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "ckpt_path=last"], tmp_path
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
        shutil.copytree(synthetic_root / folder, test_only / folder)

    preds = tmp_path / "preds.csv"
    result = subprocess.run(
        [
            sys.executable, "-m", "pipnet_lit.eval", f"ckpt_path={last}", f"data.root={test_only}",
            f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0", "data.synthetic=null",
            f"predictions_csv={preds}", f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu",
            "run_name=ev",
        ],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "synthetic_common" in result.stdout and "nme" in result.stdout
    rows = list(csv.reader(preds.open()))
    assert rows[0][:4] == ["subset", "image", "x0", "y0"] and len(rows[0]) == 2 + 2 * 68
    # every image of a multi-folder subset once, under its own name
    full = sorted(r[1] for r in rows[1:] if r[0] == "synthetic_full")
    expected = sorted(
        f"{folder}/{folder}_{p.stem}.png"
        for folder in ("common", "challenge")
        for p in (test_only / folder).glob("*.pts")
    )
    assert full == expected and len(full) == 5
    # the same checkpoint on the same images gives the numbers the training job reported
    evaluated = json.loads((tmp_path / "outputs" / "eval" / "ev" / "test_metrics.json").read_text())
    for subset in ("synthetic_full", "synthetic_common", "synthetic_challenge"):
        assert evaluated[subset]["nme_io"] == pytest.approx(results[subset]["nme_io"], abs=1e-6)


@pytest.mark.slow
def test_ddp_test_metrics_equal_single_process(synthetic_root, tmp_path):
    """Two CPU processes (gloo) see each test image exactly once: the metrics equal one process's."""
    import lightning as L

    from pipnet_lit.datasets.datamodule import LandmarkDataModule
    from pipnet_lit.lit_module import PIPNetModule

    def make():
        dm = LandmarkDataModule(
            meta="synthetic", root=str(synthetic_root), cache_dir=str(tmp_path / "cache"), input_size=64,
            eval_batch_size=2, num_workers=0, eval_subsets=["full"],
        )  # fmt: skip
        torch.manual_seed(0)
        module = PIPNetModule(net_stride=16, input_size=64, pretrained=False)
        return dm, module

    results = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        dm, module = make()
        trainer = L.Trainer(
            accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False,
        )  # fmt: skip
        trainer.test(module, datamodule=dm, verbose=False)
        results[devices] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert results[1]["test/synthetic_full/nme_io"] > 0
    for key in ("test/synthetic_full/nme_io", "test/synthetic_full/fr@0.10", "test/synthetic_full/auc@0.10"):
        assert results[2][key] == pytest.approx(results[1][key], abs=1e-7), key


def test_fresh_run_refuses_a_folder_that_holds_a_run(synthetic_root, tmp_path):
    cfg = compose_train(["+experiment=synthetic", *tiny_overrides(synthetic_root, tmp_path)], tmp_path)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="ckpt_path=last.*run_name="):
        train(cfg)


def test_test_only_needs_an_explicit_checkpoint(synthetic_root, tmp_path):
    overrides = ["+experiment=synthetic", *tiny_overrides(synthetic_root, tmp_path), "train=false"]
    with pytest.raises(ValueError, match="test_ckpt=/path/to.ckpt"):
        train(compose_train(overrides, tmp_path))


def test_missing_folder_names_the_dataset_layout(synthetic_root, tmp_path):
    from pipnet_lit.datasets.datamodule import LandmarkDataModule

    partial = tmp_path / "partial"
    shutil.copytree(synthetic_root / "common", partial / "common")
    dm = LandmarkDataModule(meta="synthetic", root=str(partial), cache_dir=str(tmp_path / "c"), input_size=64)
    with pytest.raises(FileNotFoundError, match=r"lacks the folder\(s\) \['trainset', 'challenge'\]"):
        dm.prepare_data()
    # evaluation of a checkpoint does not need the training folder
    dm = LandmarkDataModule(
        meta="synthetic", root=str(partial), cache_dir=str(tmp_path / "c"), input_size=64, load_train=False
    )
    with pytest.raises(FileNotFoundError, match=r"\['challenge'\]"):
        dm.prepare_data()
