"""The global random generators (torch, CUDA, numpy, Python) as plain values: captured, restored, and held
across a block. Plain values (lists, ints, tensors) so that a checkpoint holding them still loads with
``torch.load(weights_only=True)``. No Lightning: the resume callback and the self-training chain use it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_global_random_state",
    "preserved_random_state",
    "python_state_from_plain",
    "python_state_to_plain",
    "restore_global_random_state",
]


def python_state_to_plain(state: tuple[Any, ...]) -> list[Any]:
    """A `random.Random` state (``getstate()``) as ``[version, internal (list), gauss]``."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_state_from_plain(plain: list[Any]) -> tuple[Any, ...]:
    """The inverse of `python_state_to_plain`, ready for ``setstate``."""
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)


def capture_global_random_state() -> dict[str, Any]:
    """The global torch, numpy and Python generators' states (and CUDA's, when CUDA is initialized)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), cached],
        "python": python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_random_state(state: dict[str, Any]) -> None:
    """Set the global generators to a `capture_global_random_state` result."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore the global torch, numpy and Python generators (CUDA's too) when the block ends."""
    state = capture_global_random_state()
    try:
        yield
    finally:
        restore_global_random_state(state)
