"""Shared fixtures. W&B stays offline and writes to a temp dir; albumentations never checks for updates."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("WANDB_MODE", "offline")
if "WANDB_DIR" not in os.environ:
    # a folder of this test process, removed when it exits (the disk is shared with CI: leave nothing behind)
    os.environ["WANDB_DIR"] = tempfile.mkdtemp(prefix="wandb-")
    atexit.register(shutil.rmtree, os.environ["WANDB_DIR"], ignore_errors=True)
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (make test): N workers share the cores, so each worker and the commands it starts use
    # one thread instead of all cores each (oversubscribed BLAS threads spin and slow everything down).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

#: What a DDP run leaves in os.environ (Lightning sets them in the launching process). A later DDP test, or
#: a subprocess inheriting them, would rendezvous on the previous run's port and hang.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _fresh_ddp_environment(monkeypatch):
    for name in _DDP_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _rank_zero_again():
    """Every test starts as rank 0. Building a DDP trainer (e.g. as rank 3 of a SLURM job) sets Lightning's
    process-wide ``rank_zero_only.rank``; left behind, every later run in this process would skip its
    rank-0-only work (the CSV logger's ``metrics.csv``, checkpoints' symlinks, printed tables)."""
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero as pytorch_rank_zero
    from lightning_utilities.core import rank_zero as utils_rank_zero

    modules = (fabric_rank_zero, pytorch_rank_zero, utils_rank_zero)
    holders = {id(m.rank_zero_only): m.rank_zero_only for m in modules}
    yield
    for holder in holders.values():
        holder.rank = 0
