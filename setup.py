"""Packaging hook (everything else is in pyproject.toml).

The Hydra config tree lives at the repository root (``conf/``), where a researcher opens it. A wheel carries
it inside the package as ``pipnet_lit/conf`` so that a non-editable install, and a job started in any
folder, finds it (`pipnet_lit.config.find_config_dir`). An editable install reads the root folder directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``conf/`` into the built package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "pipnet_lit" / "conf"
        shutil.copytree(ROOT / "conf", target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
