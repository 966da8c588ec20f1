"""Readers: one per raw on-disk format, each turning a download into :class:`FaceRecord` lists.

A reader is a function ``read(root: Path, *, bad: BadInput, **spec) -> list[FaceRecord]``: ``root`` is the
dataset's folder (``data.root`` / the dataset YAML's ``dir``), ``spec`` the split's keys from the dataset
YAML (files, folders, crop scale, ...). The dataset YAML names the reader with ``format:``; this module maps
format names to readers, importing each reader module only when it is used (``.mat`` readers pull in
h5py / scipy). Add a format with :func:`register_reader` (or an entry in ``_BUILTIN``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipnet_lit.datasets.records import BadInput, FaceRecord

Reader = Callable[..., list[FaceRecord]]

# format name -> "module:function" (imported lazily)
_BUILTIN: dict[str, str] = {
    "300w": "pipnet_lit.datasets.readers.w300:read_300w",
    "wflw": "pipnet_lit.datasets.readers.wflw:read_wflw",
    "cofw": "pipnet_lit.datasets.readers.cofw:read_cofw",
    "cofw68": "pipnet_lit.datasets.readers.cofw:read_cofw68",
    "aflw": "pipnet_lit.datasets.readers.aflw:read_aflw",
    "celeba": "pipnet_lit.datasets.readers.celeba:read_celeba",
    "folder": "pipnet_lit.datasets.readers.folder:read_folder",
    "table": "pipnet_lit.datasets.readers.table:read_table",
}
_REGISTRY: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator: make ``fn`` the reader of format ``name`` (for formats outside this package)."""

    def wrap(fn: Reader) -> Reader:
        _REGISTRY[name] = fn
        return fn

    return wrap


def known_formats() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_reader(name: str) -> Reader:
    """The reader for format ``name``; a clear error lists the known formats."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown dataset format {name!r}; known formats: {known_formats()}")
    module, func = _BUILTIN[name].split(":")
    _REGISTRY[name] = getattr(importlib.import_module(module), func)
    return _REGISTRY[name]


def read_records(fmt: str, root: Path, bad: BadInput | None = None, **spec: Any) -> list[FaceRecord]:
    """Read one split: ``get_reader(fmt)(root, bad=bad, **spec)``."""
    return get_reader(fmt)(Path(root), bad=bad or BadInput("raise"), **spec)
