"""Fault injection at named points, for the kill-at-every-phase tests (standard library only).

``PIPNET_KILL_AT=<point>[@<n>]`` in the environment makes the process SIGKILL itself the n-th time (default:
the first) it reaches ``kill_point("<point>")``: an exact place, not a timing guess. Without the variable a
point costs one dictionary lookup. Points (grep ``kill_point(``):

    prepare          the crop cache, half of a split's crops written, before its files and manifest
    train_batch      a training step (mid-epoch), before the optimizer step
    checkpoint_save  a checkpoint's bytes written to the temporary file, before the rename
    test             a test step (mid-test)
    pseudo_labels    the pseudo-labelling pass, after its first batch
    rounds_files     the chain's summary, after rounds.json and before rounds.md
"""

from __future__ import annotations

import os
import signal

ENV = "PIPNET_KILL_AT"
POINTS = ("prepare", "train_batch", "checkpoint_save", "test", "pseudo_labels", "rounds_files")
_reached: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``PIPNET_KILL_AT`` names this point (and this is its n-th visit)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
