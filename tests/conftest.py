"""Shared fixtures. W&B stays offline and writes to a temp dir; albumentations never checks for updates."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="wandb-"))
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
