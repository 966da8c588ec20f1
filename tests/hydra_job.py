"""Jobs in tests: a job's config as Hydra hands it to a task function (for tests that call `train` /
`evaluate` directly), and the environment for running one as a command."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from pipnet_lit.config import CONFIG_DIR


def compose_job(
    config_name: str,
    overrides: list[str],
    workdir: Path | None = None,
    *,
    output_dir: Path | None = None,
    keep_hydra: bool = False,
) -> DictConfig:
    """Compose `config_name` (train / eval) with `overrides`, as the job Hydra would run.

    `paths.root_dir` is `workdir` (a fixed temp folder when None) and the run folder is `output_dir`
    (default `<workdir>/outputs/<run_name>`). HydraConfig is set, as inside a job; the returned config
    has no `hydra` node unless `keep_hydra` (tests of launchers and sweepers read it).
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    root = Path(workdir) if workdir is not None else Path(tempfile.gettempdir()) / "pipnet-test-root"
    out = Path(output_dir) if output_dir is not None else root / "outputs" / str(cfg.run_name)
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.output_dir = str(out)
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]  # as in a real run: the job's config has no hydra node
    return cfg


#: A tiny self-training chain's data and trainer (8 labeled faces, a pool of 6, 64 px): tests of chains
#: add the schedule, epochs and the rest.
TINY_SSL = [
    "+experiment=synthetic_ssl",
    "data.sources.synthetic_ssl.n_train=8", "data.sources.synthetic_ssl.n_common=3",
    "data.sources.synthetic_ssl.n_challenge=1", "data.sources.synthetic_ssl.n_wild=6",
    "data.sources.synthetic_ssl.n_wild_test=3", "data.sources.synthetic_ssl.image_size=80",
    "data.input_size=64", "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0",
    "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
]  # fmt: skip


def job_env(**extra: str) -> dict[str, str]:
    """Environment for a `python -m pipnet_lit...` subprocess: this one's, W&B offline, no albumentations
    update check, unbuffered output (a killed job's log is complete), plus `extra`."""
    quiet = {"WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    return {**os.environ, **quiet, **extra}
