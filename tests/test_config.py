"""Every config composes and instantiates; `--cfg job` shows the whole config; bad keys fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_job import compose_job
from pipnet_lit.config import CONFIG_DIR, instantiate_group

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment):
    cfg = compose_job("train", [f"+experiment={experiment}", "model.pretrained=false"])
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data)
    assert model.hparams.num_landmarks == dm.num_landmarks
    assert model.hparams.input_size == cfg.data.input_size
    callbacks = instantiate_group(cfg.callbacks)
    assert {type(c).__name__ for c in callbacks} >= {"ModelCheckpoint", "RichProgressBar"}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


SSL_EXPERIMENTS = sorted(e for e in EXPERIMENTS if "_ssl" in e)


@pytest.mark.parametrize("experiment", SSL_EXPERIMENTS)
def test_self_training_experiments_run_their_chain(experiment):
    # every SSL experiment is a chain run by the ssl_chain sweeper; `_nocurriculum` is the official `_wocc`
    cfg = compose_job("train", [f"+experiment={experiment}"], keep_hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper._target_.endswith("SSLChainSweeper")
    assert cfg.run_name == experiment and cfg.model.coarse_levels == 2
    curriculum = ["cls3", "cls2", "std", "std", "std"]
    expected = ["std", "std", "std"] if experiment.endswith("_nocurriculum") else curriculum
    assert list(cfg.ssl.schedule) == expected
    if experiment.endswith("_nocurriculum"):  # the same setting as its curriculum experiment otherwise
        base = compose_job("train", [f"+experiment={experiment.removesuffix('_nocurriculum')}"])
        for group in ("data", "model", "trainer"):
            ours, theirs = (OmegaConf.to_container(c[group], resolve=True) for c in (cfg, base))
            ours.pop("default_root_dir", None), theirs.pop("default_root_dir", None)  # the run folder
            assert ours == theirs, group


def test_default_config_resolves_dataset_facts():
    cfg = compose_job("train", [])
    resolved = OmegaConf.to_container(cfg.model, resolve=True)
    assert resolved["num_landmarks"] == 68
    assert resolved["metrics"] is None  # the NMEs come from the dataset YAML, through the datamodule
    assert cfg.callbacks.model_checkpoint.save_last is True


def test_demo_experiment_is_the_cpu_sized_run():
    cfg = compose_job("train", ["+experiment=synthetic"])
    assert cfg.data.input_size == 96 and cfg.model.net_stride == 16 and cfg.model.pretrained is False
    assert cfg.trainer.accelerator == "cpu" and cfg.run_name == "synthetic"
    # one validation, at the end (the last epoch is tested); it follows a changed epoch count
    assert cfg.trainer.max_epochs == cfg.trainer.check_val_every_n_epoch == 10
    longer = compose_job("train", ["+experiment=synthetic", "trainer.max_epochs=14"])
    assert longer.trainer.check_val_every_n_epoch == 14


def test_cfg_job_prints_whole_config():
    result = subprocess.run(
        [sys.executable, "-m", "pipnet_lit.train", "--cfg", "job", "+experiment=synthetic"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stderr
    for key in ("data:", "model:", "trainer:", "callbacks:", "logger:", "paths:", "backbone: resnet18"):
        assert key in result.stdout


def test_bad_eval_subset_is_a_clear_error():
    cfg = compose_job("train", ["data.eval_subsets=[common,nope]"])
    with pytest.raises(Exception, match="does not define"):
        instantiate(cfg.data)
