"""Launchers and scale: the trainer configs (fp32 GPU, DDP, simulated DDP), SLURM through submitit, and
local multiruns through the submitit and joblib launchers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_job import compose_job, job_env
from pipnet_lit.config import CONFIG_DIR

REPO = Path(__file__).parents[1]
SUBSETS = {"synthetic_full", "synthetic_common", "synthetic_challenge"}

#: What each trainer config must say (a new trainer config needs a row here).
TRAINERS: dict[str, dict[str, Any]] = {
    "default": {"accelerator": "auto", "devices": 1, "num_nodes": 1},
    "cpu": {"accelerator": "cpu", "devices": 1, "num_nodes": 1},
    "gpu": {"accelerator": "gpu", "devices": 1, "num_nodes": 1, "precision": "bf16-mixed"},
    "ddp": {
        "accelerator": "gpu",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "ddp",
        "sync_batchnorm": False,
    },
    "ddp_sim": {"accelerator": "cpu", "devices": 2, "num_nodes": 1, "strategy": "ddp_spawn"},
}

#: Tiny synthetic data for the multiruns (the jobs find it prepared: see `_prepare`).
TINY = [
    "+experiment=synthetic",
    "data.sources.synthetic.n_train=8", "data.sources.synthetic.n_common=3",
    "data.sources.synthetic.n_challenge=2", "data.sources.synthetic.n_wild=0",
    "data.sources.synthetic.image_size=80", "data.load_unlabeled=false",
    "data.input_size=64", "data.batch_size=2", "data.eval_batch_size=16", "data.num_workers=0",
    "model.pretrained=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
]  # fmt: skip

#: The PIPNET_SLURM_* variables that conf/hydra/launcher/slurm.yaml reads.
SLURM_VARS = (
    "PARTITION", "ACCOUNT", "QOS", "CONSTRAINT", "GPUS_PER_NODE", "CPUS_PER_TASK", "MEM_GB", "TIMEOUT_MIN",
    "MAX_REQUEUE",
)  # fmt: skip


def make_trainer(cfg: DictConfig):
    return instantiate(cfg.trainer, logger=False, enable_progress_bar=False)


# -- trainer configs ---------------------------------------------------------------------------------
def test_every_trainer_config_is_listed():
    assert sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml")) == sorted(TRAINERS)


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_trainer_config_composes_in_fp32(name, tmp_path):
    """fp32 everywhere by default, as the paper; the GPU recipe (trainer=gpu) alone is bf16-mixed."""
    precision = TRAINERS[name].get("precision", "32-true")
    cfg = compose_job("train", [f"trainer={name}"], tmp_path, keep_hydra=True)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer_cfg["_target_"] == "lightning.pytorch.trainer.Trainer"
    assert trainer_cfg["precision"] == precision
    assert trainer_cfg["default_root_dir"] == cfg.paths.output_dir
    for key, value in TRAINERS[name].items():
        assert trainer_cfg[key] == value, key
    # every key is a Trainer argument: build it (GPU configs on the CPU, which is all CI has)
    gpu = TRAINERS[name]["accelerator"] == "gpu"
    cfg = compose_job(
        "train", [f"trainer={name}"] + (["trainer.accelerator=cpu"] * gpu), tmp_path, keep_hydra=True
    )
    trainer = make_trainer(cfg)
    expected_devices = 2 if name == "ddp_sim" else 1
    assert trainer.num_devices == expected_devices and trainer.world_size == expected_devices
    assert trainer.precision == precision
    if name.startswith("ddp"):
        from lightning.pytorch.strategies import DDPStrategy

        assert isinstance(trainer.strategy, DDPStrategy)
        assert trainer.strategy._start_method == ("spawn" if name == "ddp_sim" else "popen")


def test_mixed_precision_is_one_flag(tmp_path):
    cfg = compose_job(
        "train",
        ["trainer=cpu", "trainer.precision=bf16-mixed", "trainer.accelerator=gpu"],
        tmp_path,
        keep_hydra=True,
    )
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"  # Lightning supports bf16 autocast on the CPU as well
    assert make_trainer(cfg).precision == "bf16-mixed"


SLURM_JOB = {  # rank 3 of a 2-node x 2-task SLURM job: what srun sets in the 4th process
    "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
    "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "300w_r18", "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-08]",
}  # fmt: skip


def test_ddp_trainer_reads_its_ranks_from_slurm(monkeypatch, tmp_path):
    """trainer=ddp under SLURM: Lightning's SLURMEnvironment takes rank, node and world size from srun."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for key, value in SLURM_JOB.items():
        monkeypatch.setenv(key, value)
    base = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    trainer = make_trainer(compose_job("train", [*base, "trainer.num_nodes=2"], tmp_path, keep_hydra=True))
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (3, 1, 1)
    assert trainer.world_size == 4 and trainer.num_nodes == 2
    assert env.main_address == "gpu07"  # the first node of the allocation hosts rank 0
    env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)  # what fit() checks
    # a node count that disagrees with the allocation is refused by name when training starts
    trainer = make_trainer(compose_job("train", [*base, "trainer.num_nodes=1"], tmp_path, keep_hydra=True))
    with pytest.raises(ValueError, match=r"num_nodes=1.*--nodes=2"):
        trainer.strategy.cluster_environment.validate_settings(trainer.num_devices, trainer.num_nodes)


# -- the SLURM launcher --------------------------------------------------------------------------------
def test_slurm_launcher_defaults_and_environment(monkeypatch, tmp_path):
    for var in SLURM_VARS:
        monkeypatch.delenv(f"PIPNET_SLURM_{var}", raising=False)
    cfg = compose_job("train", ["hydra/launcher=slurm", "run_name=r"], tmp_path, keep_hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    expected = {
        "partition": "gpu", "account": None, "qos": None, "nodes": 1, "gpus_per_node": 1,
        "tasks_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "timeout_min": 1440, "max_num_timeout": 0,
        "name": "r",
    }  # fmt: skip
    assert {k: launcher[k] for k in expected} == expected

    env = {"PARTITION": "a100", "ACCOUNT": "lab", "GPUS_PER_NODE": "4", "CPUS_PER_TASK": "6"}
    env |= {"MEM_GB": "200", "TIMEOUT_MIN": "90", "MAX_REQUEUE": "3"}
    for var, value in env.items():
        monkeypatch.setenv(f"PIPNET_SLURM_{var}", value)
    cfg = compose_job(
        "train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2"], tmp_path, keep_hydra=True
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    expected = {
        "partition": "a100", "account": "lab", "nodes": 2, "gpus_per_node": 4, "tasks_per_node": 4,
        "cpus_per_task": 6, "mem_gb": 200, "timeout_min": 90, "max_num_timeout": 3,
    }  # fmt: skip
    assert {k: launcher[k] for k in expected} == expected
    # the command line wins over the environment
    cfg = compose_job(
        "train", ["hydra/launcher=slurm", "hydra.launcher.partition=h100"], tmp_path, keep_hydra=True
    )
    assert cfg.hydra.launcher.partition == "h100" and cfg.hydra.launcher.nodes == 1


class _Submitted(Exception):
    """Raised instead of calling sbatch: carries the script submitit wrote."""


def test_slurm_launcher_submits_one_array_task_per_job(monkeypatch, tmp_path):
    """The sbatch script of a 2-job multirun: an array of 2 jobs, each 2 nodes x 4 GPUs, 4 tasks a node."""
    import submitit.slurm.slurm as submitit_slurm

    for var in SLURM_VARS:
        monkeypatch.delenv(f"PIPNET_SLURM_{var}", raising=False)
    monkeypatch.setenv("PIPNET_SLURM_GPUS_PER_NODE", "4")

    def submit(self, command):
        raise _Submitted(self._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun here
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "_submit_command", submit)
    overrides = [
        "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "hydra.launcher.partition=a100",
        "hydra.launcher.timeout_min=120", f"hydra.sweep.dir={tmp_path / 'sweep'}", "run_name=300w_r18",
    ]  # fmt: skip
    cfg = compose_job("train", overrides, tmp_path, keep_hydra=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(_Submitted) as submitted:
        launcher.launch([["model.num_nb=5"], ["model.num_nb=10"]], initial_job_idx=0)
    lines = set(str(submitted.value.args[0]).splitlines())
    for line in (
        "#SBATCH --partition=a100", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --time=120",
        "#SBATCH --job-name=300w_r18", "#SBATCH --array=0-1%2",
    ):  # fmt: skip
        assert line in lines, line
    srun = next(line for line in lines if line.startswith("srun "))
    assert f"{sys.executable} -u -m submitit.core._submit {tmp_path / 'sweep' / '.submitit' / '%j'}" in srun
    assert len(list((tmp_path / "sweep" / ".submitit").rglob("*.pkl"))) == 2  # one pickled job per value


# -- local multiruns -----------------------------------------------------------------------------------
def _prepare(root: Path) -> None:
    """Render and crop the tiny data once, so that the parallel jobs only read it."""
    cfg = compose_job("train", TINY, root, keep_hydra=True)
    instantiate(cfg.data).prepare_data()


def _multirun(root: Path, *launcher: str) -> dict[int, Path]:
    """`python -m pipnet_lit.train -m <launcher> ... model.num_nb=3,4`: num_nb -> the job's run folder."""
    _prepare(root)
    cmd = [
        sys.executable, "-m", "pipnet_lit.train", "-m", *TINY, "trainer.max_epochs=1", "model.num_nb=3,4",
        f"paths.root_dir={root}", f"hydra.sweep.dir={root / 'outputs' / 'sweep'}", *launcher,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=job_env())
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = root / "outputs" / "sweep"
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == ["0", "1"]  # one folder per job
    by_nb = {}
    for run in runs:
        results = json.loads((run / "test_metrics.json").read_text())
        assert set(results) == SUBSETS, run
        for values in results.values():
            assert math.isfinite(values["nme_io"]) and 0 < values["nme_io"] < 10
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        by_nb[ckpt["hyper_parameters"]["num_nb"]] = run  # the swept value reached the job's model
    assert sorted(by_nb) == [3, 4]
    metrics = [json.loads((by_nb[nb] / "test_metrics.json").read_text()) for nb in (3, 4)]
    assert metrics[0] != metrics[1]  # two different models were trained and tested
    return by_nb


@pytest.mark.slow
def test_submitit_local_multirun_runs_each_job_in_its_own_process(tmp_path):
    by_nb = _multirun(tmp_path, "hydra/launcher=submitit_local")
    jobs = [p for p in (tmp_path / "outputs" / "sweep" / ".submitit").iterdir() if p.name != "%j"]
    assert len(jobs) == 2 and all(len(list(j.glob("*_result.pkl"))) == 1 for j in jobs)
    for nb, run in by_nb.items():
        assert f"model.num_nb={nb}" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_joblib_multirun(tmp_path):
    """Loader workers start inside joblib's (loky) workers, whose default context cannot start them."""
    by_nb = _multirun(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data.num_workers=1")
    multirun = OmegaConf.load(tmp_path / "outputs" / "sweep" / "multirun.yaml")
    assert multirun.hydra.launcher._target_.endswith("JoblibLauncher") and multirun.hydra.launcher.n_jobs == 2
    for nb, run in by_nb.items():
        assert f"model.num_nb={nb}" in (run / ".hydra" / "overrides.yaml").read_text()


# -- simulated DDP through train() ---------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_sim_trains_and_tests_like_one_process(tmp_path):
    """trainer=ddp_sim: a fast_dev_run fit in 2 CPU processes, then the test of a checkpoint equals 1 process.

    The 1-process run trains in this process; the 2-process run is a `python -m pipnet_lit.train`
    subprocess (spawned DDP workers inside the pytest process could hang after earlier tests left
    process-wide state). It tests the 1-process run's last.ckpt: every image is scored once and the
    per-image NMEs gathered, so its per-image results (written by rank 0) give the 1-process NMEs exactly.
    """
    from pipnet_lit.run_results import read_per_image_results
    from pipnet_lit.train import train

    cfg = compose_job("train", [*TINY, "trainer=cpu", "trainer.max_epochs=1", "run_name=one"], tmp_path)
    train(cfg)
    one = tmp_path / "outputs" / "one"
    ckpt = one / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    cmd = [
        sys.executable, "-m", "pipnet_lit.train", *TINY, f"paths.root_dir={tmp_path}", "trainer=ddp_sim",
        "+debug=fast", f"test_ckpt={ckpt}", "run_name=two",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single = json.loads((one / "test_metrics.json").read_text())
    double = read_per_image_results(tmp_path / "outputs" / "train" / "two" / "test_per_image.csv")
    assert set(double) == SUBSETS and single["synthetic_full"]["nme_io"] > 0
    # the spawned workers' synced metrics reach the launching process, which writes the table
    two = json.loads((tmp_path / "outputs" / "train" / "two" / "test_metrics.json").read_text())
    assert set(two) == SUBSETS
    for subset in SUBSETS:
        for key in ("nme_io", "nme_ip", "fr@0.10", "auc@0.10"):
            assert two[subset][key] == pytest.approx(single[subset][key], abs=1e-6), (subset, key)
    for subset in SUBSETS:
        for key in ("nme_io", "nme_ip"):
            assert double[subset].nmes[key].mean() == pytest.approx(single[subset][key], abs=1e-7), (
                subset,
                key,
            )
