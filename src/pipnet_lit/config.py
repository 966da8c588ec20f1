"""Hydra/OmegaConf glue: where the configs live, custom resolvers, and building objects from config groups."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: The Hydra config groups, shipped inside the package (so a non-editable install and a job started in any
#: folder, e.g. a SLURM job, find them).
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def _num_landmarks(meta: str) -> int:
    from pipnet_lit.datasets.meta import load_dataset_meta

    return load_dataset_meta(str(meta)).landmarks.num_landmarks


def _launch_dir() -> str:
    """The folder the command was started in: Hydra's ``runtime.cwd`` inside a job, else the current folder.

    ``${hydra:runtime.cwd}`` alone cannot resolve where a sweeper reads ``hydra.sweep.dir`` (Hydra sets its
    config for each job, not for the sweeper), which broke every ``-m`` run left on the default paths.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


def register_resolvers() -> None:
    """`${pipnet.num_landmarks:<data.meta>}` reads the landmark count from the dataset description;
    `${pipnet.cwd:}` is the folder the command was started in."""
    for name, fn in (("pipnet.num_landmarks", _num_landmarks), ("pipnet.cwd", _launch_dir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def check_config_dir() -> str:
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise FileNotFoundError(
            f"Hydra configs not found at {CONFIG_DIR}: the installed pipnet_lit package is incomplete "
            "(reinstall it; the configs ship as package data under pipnet_lit/conf/)"
        )
    return str(CONFIG_DIR)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a name -> config mapping (callbacks, loggers); `null` entries are skipped."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    objects = []
    for name, item in cfg.items():
        if item is None:
            continue
        if not isinstance(item, DictConfig) or "_target_" not in item:
            raise ValueError(f"config entry {name!r} needs a _target_ (got {OmegaConf.to_yaml(item)!r})")
        objects.append(instantiate(item))
    return objects


register_resolvers()
# Lightning 2.6 trips over its own deprecation with torch 2.14 on every step; it is not actionable here.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
