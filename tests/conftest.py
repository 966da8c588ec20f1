"""Shared fixtures. W&B stays offline and writes to a temp dir; albumentations never checks for updates."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="wandb-"))
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"

import pytest  # noqa: E402

#: What a DDP run leaves in os.environ (Lightning sets them in the launching process). A later DDP test, or
#: a subprocess inheriting them, would rendezvous on the previous run's port and hang.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _fresh_ddp_environment(monkeypatch):
    for name in _DDP_ENV:
        monkeypatch.delenv(name, raising=False)
