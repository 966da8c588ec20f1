"""Writing state files so that a kill leaves the old file or the new one, never half of one; reading them
back without a traceback; a file's sha256. Standard library only: the chain sweeper (imported at every Hydra
start-up) and the crop cache use the same functions."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: Temporary files of `atomic_write` are named ``.<name>.tmp-<pid>`` beside their target (never ``*.ckpt``,
#: ``*.json``, ...: no reader mistakes one for the real file); `stale_temporaries` finds those a kill left.
TEMP_MARK = ".tmp-"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any], *, durable: bool = True) -> Path:
    """``write(temporary path)`` in ``path``'s folder, flush it to disk, then ``os.replace`` it onto ``path``:
    a kill or a full disk leaves the old file or the new one, never part of one.

    ``durable=False`` skips the flush (a rename is still atomic against a kill; only a power cut could lose
    the bytes): for many small files whose folder is marked complete by a durable file written last, as
    the crop cache's images before its manifest (`flush_all` between the two).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        if durable:
            with tmp.open("rb+") as f:  # the bytes reach the disk before the name points at them
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see `atomic_write` for ``durable``)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=durable)


def flush_all() -> None:
    """Flush every written file to disk (``os.sync``; nothing where the platform has none)."""
    if hasattr(os, "sync"):
        os.sync()


def stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """The temporary files `atomic_write` left in ``folder`` when its process was killed (or all of them,
    while a writer is still running: call this only for a folder no other process writes)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and TEMP_MARK in p.name)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def write_csv_atomic(path: str | os.PathLike[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``rows`` as CSV (the csv module's default ``\\r\\n`` line ends, UTF-8) to ``path`` atomically."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` as indented, key-sorted JSON atomically (a marker or manifest is written last: its
    presence says the folder is complete)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes (a checkpoint's or a weight file's identity in manifests)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, a folder, cut short, not UTF-8, not JSON
        return None
    return data if isinstance(data, dict) else None
