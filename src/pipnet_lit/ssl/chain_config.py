"""A chain knows its config: the resolved settings that define a self-training chain, kept in ``chain.json``.

A chain is more than its folder name: re-running ``run_name=X`` with another learning rate, pool or schedule
must not adopt X's finished rounds as its own. The *defining config* is the job's resolved config without
what may change between the rounds of one chain: the round number and chain name (``ssl.round``,
``ssl.chain``), the folders (``paths.*``; values built from them read ``<paths.output_dir>`` and so on), the
launcher and the rest of ``hydra``, resuming (``ckpt_path``), and what only shows or logs (``logger``,
``tags``, the progress bar and model summary callbacks). The first round to run records it; every later job
of the chain (and the sweeper, before it skips finished rounds) compares its own and refuses a difference,
naming the keys, unless ``ssl.allow_config_change=true`` says to continue (the change is then recorded).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipnet_lit.files import read_json_object, write_json_atomic
from pipnet_lit.ssl.layout import CHAIN_CONFIG_NAME

#: Top-level keys that never define a chain.
EXCLUDED_TOP = ("hydra", "paths", "ckpt_path", "run_name", "task_name", "tags", "logger")
#: Dotted keys that never define a chain.
EXCLUDED_KEYS = (
    "ssl.round",
    "ssl.chain",
    "ssl.allow_config_change",
    "callbacks.rich_progress_bar",
    "callbacks.model_summary",
)


class ChainConfigError(ValueError):
    """A chain folder holds a chain made with another config."""


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}`` (lists stay lists)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def defining_config(cfg: DictConfig) -> dict[str, Any]:
    """The chain-defining part of a job's config, resolved and flattened to dotted keys (JSON values)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    paths = plain.get("paths") or {}
    copy = OmegaConf.create({k: v for k, v in plain.items() if k != "hydra"})
    # folders resolve to placeholders: a chain moved to another disk is the same chain
    copy.paths = {key: f"<paths.{key}>" for key in paths}
    try:
        resolved = OmegaConf.to_container(copy, resolve=True)
    except Exception:  # an interpolation that only resolves inside a Hydra job: keep its text
        resolved = OmegaConf.to_container(copy, resolve=False)
    assert isinstance(resolved, dict)
    for key in EXCLUDED_TOP:
        resolved.pop(key, None)
    flat = flatten(resolved)
    return {k: v for k, v in flat.items() if not any(k == e or k.startswith(e + ".") for e in EXCLUDED_KEYS)}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every key whose value differs (missing: ``<unset>``), sorted."""
    unset = "<unset>"
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k, unset), new.get(k, unset)) for k in keys if old.get(k, unset) != new.get(k, unset)]


def _format_diff(diff: list[tuple[str, Any, Any]], limit: int = 20) -> str:
    lines = [f"  {key}: {old!r} -> {new!r}" for key, old, new in diff[:limit]]
    if len(diff) > limit:
        lines.append(f"  ... and {len(diff) - limit} more")
    return "\n".join(lines)


def check_chain_config(
    chain_dir: str | Path,
    defining: dict[str, Any],
    *,
    chain_name: str | None = None,
    allow_change: bool = False,
    swept: list[str] | None = None,
    schedule: list[str] | None = None,
) -> Path:
    """Record ``defining`` in ``<chain>/chain.json`` (first use), or compare it with the recorded one.

    ``chain_name`` (``run_name`` or ``run_name/<swept values>``), ``swept`` (the sweep overrides that made
    this chain) and ``schedule`` are recorded beside the config for the reports.

    Raises `ChainConfigError` listing the differing keys and how to proceed, unless ``allow_change``: then
    the new config is recorded with the change appended to the file's ``changes`` list.
    """
    chain_dir = Path(chain_dir)
    path = chain_dir / CHAIN_CONFIG_NAME
    found = read_json_object(path)
    record = {
        "chain": chain_name or chain_dir.name,
        "config": defining,
        "swept": list(swept or []),
        "schedule": list(schedule or []),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "changes": [],
    }
    if found is None or not isinstance(found.get("config"), dict):
        if path.exists():  # a damaged record must not silently become a new chain's
            raise ChainConfigError(
                f"{path} cannot be read as the chain's config: restore it, or delete it to record this "
                "job's config as the chain's (only if you know the finished rounds used it)"
            )
        return write_json_atomic(path, record)
    diff = config_diff(found["config"], defining)
    if not diff:
        return path
    if not allow_change:
        raise ChainConfigError(
            f"chain {chain_dir} was made with another config ({path} records it); this job differs in "
            f"{len(diff)} key(s):\n{_format_diff(diff)}\n"
            "Its finished rounds were made with the recorded values. To run this config as a chain of its "
            "own, give it a new name: run_name=<new name>. To continue this chain with the new values anyway "
            "(finished rounds stay as they are; the change is recorded in chain.json), add "
            "ssl.allow_config_change=true."
        )
    found["config"] = defining
    found["schedule"] = list(schedule or found.get("schedule") or [])
    found.setdefault("changes", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "diff": [list(d) for d in diff]}
    )
    return write_json_atomic(path, found)
