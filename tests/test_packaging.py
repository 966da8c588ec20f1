"""The config tree lives once, at the repository root (``conf/``), and a wheel carries it: a non-editable
install finds every config and trains from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hydra_job import job_env

REPO = Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (so the build leaves nothing in the repository)."""
    src = tmp_path_factory.mktemp("checkout")
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", src / "src", ignore=ignore)
    shutil.copytree(REPO / "conf", src / "conf", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*cmd, str(out)], check=True, cwd=src, env=job_env(PIP_NO_INPUT="1"))
    (found,) = out.glob("pipnet_lit-*.whl")
    return found


def test_configs_exist_once_in_the_checkout() -> None:
    assert (REPO / "conf" / "train.yaml").is_file()
    assert not (REPO / "src" / "pipnet_lit" / "conf").exists(), "a second config tree inside the package"
    from pipnet_lit.config import CONFIG_DIR

    assert CONFIG_DIR == REPO / "conf"  # an editable install reads the root folder itself


def test_wheel_carries_every_config_and_dataset_description(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        configs = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "conf").rglob("*.yaml"))
        assert len(configs) > 40
        for config in configs:
            packed = f"pipnet_lit/{config}"
            assert packed in names, f"{config} is missing from the wheel"
            assert archive.read(packed) == (REPO / config).read_bytes(), config
        descriptions = sorted((REPO / "src/pipnet_lit/datasets/descriptions").glob("*.yaml"))
        assert descriptions
        assert all(f"pipnet_lit/datasets/descriptions/{d.name}" in names for d in descriptions)
        assert "hydra_plugins/pipnet_lit_ssl/ssl_chain_sweeper.py" in names
        assert not [n for n in names if n.startswith("conf/")]  # only inside the package


@pytest.mark.slow
def test_installed_wheel_trains_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    """`pip install` of the wheel (into a folder on PYTHONPATH, ahead of the editable checkout), then the
    README's smoke run from an empty folder: the configs come from the installed package."""
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site)]
    subprocess.run([*pip, str(wheel)], check=True, env=job_env())
    empty = tmp_path / "empty"
    empty.mkdir()
    env = job_env(PYTHONPATH=str(site), WANDB_DIR=str(tmp_path / "wandb"))
    probe = "import pipnet_lit, pipnet_lit.config as c; print(pipnet_lit.__file__); print(c.CONFIG_DIR)"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=empty, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert where == [str(site / "pipnet_lit" / "__init__.py"), str(site / "pipnet_lit" / "conf")]
    tiny = [
        "data.sources.synthetic.n_train=6", "data.sources.synthetic.n_common=2",
        "data.sources.synthetic.n_challenge=2", "data.sources.synthetic.n_wild=0",
        "data.sources.synthetic.image_size=80", "data.input_size=64", "data.num_workers=0",
    ]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "pipnet_lit.train", "+experiment=synthetic", "+debug=fast", *tiny],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in (empty / "data" / "synthetic").iterdir()) == [
        "challenge",
        "common",
        "synthetic.json",
        "trainset",
        "wild",
    ]
    (config,) = (empty / "outputs").rglob(".hydra/config.yaml")
    assert "synthetic" in config.read_text()
    assert "synthetic_full" in run.stdout + run.stderr  # the test table was printed
    assert sorted(os.listdir(empty)) == ["data", "outputs"]
