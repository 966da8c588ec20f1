"""Every config composes and instantiates; `--cfg job` shows the whole config; bad keys fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from pipnet_lit.config import CONFIG_DIR, instantiate_group

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def compose_cfg(overrides: list[str], config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/pipnet-test-out"
        cfg.paths.root_dir = "/tmp/pipnet-test-root"
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the job's config has no hydra node
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment):
    cfg = compose_cfg([f"+experiment={experiment}", "model.pretrained=false"])
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data)
    assert model.hparams.num_landmarks == dm.num_landmarks
    assert model.hparams.input_size == cfg.data.input_size
    callbacks = instantiate_group(cfg.callbacks)
    assert {type(c).__name__ for c in callbacks} >= {"ModelCheckpoint", "RichProgressBar"}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_default_config_resolves_dataset_facts():
    cfg = compose_cfg([])
    resolved = OmegaConf.to_container(cfg.model, resolve=True)
    assert resolved["num_landmarks"] == 68
    assert resolved["metrics"] is None  # the NMEs come from the dataset YAML, through the datamodule
    assert cfg.callbacks.model_checkpoint.save_last is True


def test_demo_experiment_is_the_cpu_sized_run():
    cfg = compose_cfg(["+experiment=synthetic"])
    assert cfg.data.input_size == 128 and cfg.model.net_stride == 16 and cfg.model.pretrained is False
    assert cfg.trainer.accelerator == "cpu" and cfg.run_name == "synthetic"


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
    cfg = compose_cfg(["data.eval_subsets=[common,nope]"])
    with pytest.raises(Exception, match="does not define"):
        instantiate(cfg.data)
