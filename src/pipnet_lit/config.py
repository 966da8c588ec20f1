"""Hydra/OmegaConf glue: where the configs live, custom resolvers, and building objects from config groups."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def find_config_dir() -> Path:
    """The Hydra config tree: ``conf/`` at the repository root.

    A wheel (``pip install .``) carries it as ``pipnet_lit/conf`` (setup.py copies it there at build time),
    so an install and a job started in any folder (a SLURM job) find it; a source checkout or an editable
    install reads the root folder itself. Each config exists once in git, at the root.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    return here.parents[1] / "conf"


#: The config folder (see `find_config_dir`).
CONFIG_DIR = find_config_dir()


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
            f"Hydra configs not found at {CONFIG_DIR}: a checkout has them in conf/ at its root, and a "
            "wheel carries them as pipnet_lit/conf/; reinstall the package (pip install .) from a complete "
            "checkout"
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
