"""Lightning checkpoints written atomically: a kill or a full disk during a save leaves the previous file.

Lightning's own `TorchCheckpointIO` writes the checkpoint's bytes straight into ``last.ckpt``; a job killed
(or out of disk) during that write leaves half a file, which ``ckpt_path=last`` could not resume from.
`AtomicCheckpointIO` writes a temporary file beside it, flushes it and renames it into place
(`pipnet_lit.files.atomic_write`). The trainer configs install it (``trainer.plugins``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pipnet_lit.faults import kill_point
from pipnet_lit.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose saves are atomic on local paths (remote paths: Lightning's own save)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)

        def write(tmp: Path) -> None:
            torch.save(checkpoint, tmp)
            kill_point("checkpoint_save")

        atomic_write(Path(path), write)
