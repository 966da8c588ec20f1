"""A self-training chain on disk: one definition of its folders and of "round done", for every reader.

Standard library only (with `pipnet_lit.files`): the chain sweeper (a Hydra plugin imported at every
start-up), the chain's rounds and the reports read the same facts through this module::

    <chain>/chain.json                  the config that defines the chain (chain_config.py)
    <chain>/rounds.json, rounds.md      the finished rounds' results
    <chain>/round_<k>/done.json         written last: round k is finished
    <chain>/round_<k>/manifest.json     what round k read and wrote (its final checkpoint among them)
    <chain>/round_<k>/checkpoints/last.ckpt
    <chain>/round_<k>/pseudo_labels/    rounds >= 1: the pool's pseudo-labels (datasets/pseudo_labels.py)

A round is *done* when its ``done.json`` reads as a JSON object. A ``done.json`` that exists but cannot be
read is *damaged*: the round re-tests its own final model instead of blocking the chain.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipnet_lit.files import read_json_object, write_json_atomic

CHAIN_CONFIG_NAME = "chain.json"
DONE_NAME = "done.json"
MANIFEST_NAME = "manifest.json"
ROUNDS_JSON = "rounds.json"
ROUNDS_MD = "rounds.md"
CHECKPOINTS_DIRNAME = "checkpoints"
LAST_CKPT_NAME = "last.ckpt"
PSEUDO_LABELS_DIRNAME = "pseudo_labels"


class RoundState(StrEnum):
    """What a round folder holds: finished, never finished, or a finish marker that cannot be read."""

    DONE = "done"
    MISSING = "missing"
    DAMAGED = "damaged"


def round_dir(chain_dir: str | os.PathLike[str], k: int) -> Path:
    """``<chain>/round_<k>``."""
    return Path(chain_dir) / f"round_{int(k)}"


def done_path(round_folder: str | os.PathLike[str]) -> Path:
    return Path(round_folder) / DONE_NAME


def manifest_path(round_folder: str | os.PathLike[str]) -> Path:
    return Path(round_folder) / MANIFEST_NAME


def default_checkpoint(round_folder: str | os.PathLike[str]) -> Path:
    """Where a round's final model is saved: ``round_<k>/checkpoints/last.ckpt``."""
    return Path(round_folder) / CHECKPOINTS_DIRNAME / LAST_CKPT_NAME


def weights_checkpoint(round_folder: str | os.PathLike[str]) -> Path:
    """Where a round that saved no checkpoint (a fast_dev_run) leaves its weights for the next round:
    ``checkpoints/final_weights.ckpt`` (not ``last.ckpt``, which a resumed round would try to restore)."""
    return Path(round_folder) / CHECKPOINTS_DIRNAME / "final_weights.ckpt"


def pseudo_label_dir(round_folder: str | os.PathLike[str]) -> Path:
    return Path(round_folder) / PSEUDO_LABELS_DIRNAME


def round_state(round_folder: str | os.PathLike[str]) -> RoundState:
    """DONE when ``done.json`` reads as a JSON object, DAMAGED when it exists but does not, else MISSING."""
    path = done_path(round_folder)
    if read_json_object(path) is not None:
        return RoundState.DONE
    return RoundState.DAMAGED if path.exists() else RoundState.MISSING


def is_done(round_folder: str | os.PathLike[str]) -> bool:
    """Whether the round finished (its ``done.json`` reads). The sweeper and the chain both ask this."""
    return round_state(round_folder) is RoundState.DONE


def read_done(round_folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The round's ``done.json`` (None unless DONE)."""
    return read_json_object(done_path(round_folder))


def mark_done(round_folder: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write the round's ``done.json`` atomically: the last thing a round writes."""
    return write_json_atomic(done_path(round_folder), record)


def write_round_manifest(round_folder: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write what the round read and wrote (``manifest.json``) atomically."""
    return write_json_atomic(manifest_path(round_folder), manifest)


def recorded_checkpoint(round_folder: str | os.PathLike[str]) -> Path:
    """The final model a finished round recorded in its manifest (``wrote.checkpoint``; a relative path is
    relative to the round folder, so a chain moved elsewhere still finds it); the default
    ``checkpoints/last.ckpt`` for a round whose manifest is missing or lacks that field."""
    manifest = read_json_object(manifest_path(round_folder)) or {}
    wrote = manifest.get("wrote")
    found = wrote.get("checkpoint") if isinstance(wrote, dict) else None
    if not found:
        return default_checkpoint(round_folder)
    path = Path(found)
    if not path.is_absolute():
        return Path(round_folder) / path
    if not path.exists() and default_checkpoint(round_folder).exists():  # an older chain, moved
        return default_checkpoint(round_folder)
    return path


def relative_to_round(round_folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """``path`` relative to the round folder when inside it (what manifests record), else absolute."""
    path, folder = Path(path).resolve(), Path(round_folder).resolve()
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)
