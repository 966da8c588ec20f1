"""Seed aggregates of self-training chains: chains that differ only in ``seed`` form a *variant*; per
variant, round, test subset and metric, the mean ± sample std (ddof=1) over seeds and each seed's value.

Reads chain folders only (no Lightning, no Hydra, no network)::

    <chain>/rounds.json     {"chain", "rounds": [{"round", "task", "results": {subset: {metric: value}},
                             "pseudo_labels": {"pl_nme", ...} (optional)}]}, fractions
    <chain>/chain.json      {"chain", "config": {dotted key: value}, "swept": [override], "schedule": [task]}
                            (optional: without it a chain is grouped by its folder name less ``seed=<n>``)

and writes ``seeds.md`` (one table per test subset: rounds × variants, the primary NME; then every metric;
then each seed's values), ``seeds.csv`` (long format, fractions, one ``seed_<s>`` column per seed) and
``seeds.png`` (the primary NME per round, one line per variant, a ± std band). ``summarize_chains`` does it
all; ``python -m pipnet_lit.compare`` calls it when the folders it compares hold chains, and the chain
sweeper when a multirun's last stage ends.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipnet_lit.files import atomic_write, atomic_write_text
from pipnet_lit.presentation import format_metric, is_percent, markdown_table, metric_header, new_figure
from pipnet_lit.ssl.layout import (
    CHAIN_CONFIG_NAME,
    CHECKPOINTS_DIRNAME,
    PSEUDO_LABELS_DIRNAME,
    ROUNDS_JSON,
)

SEEDS_MD = "seeds.md"
SEEDS_CSV = "seeds.csv"
SEEDS_PNG = "seeds.png"
#: The subset key under which a round's pseudo-label metrics (``pl_nme``, ``pl_cell_hit``, ...) are kept:
#: they describe the unlabeled pool, not a test subset.
POOL_SUBSET = "pseudo_labels"
#: Seeds below this count get a warning: a mean of one or two seeds says little about a difference.
MIN_SEEDS = 3
_ROUND = re.compile(r"round_\d+")
#: Folders never searched for chains (a chain's rounds hold these; hidden folders are skipped too).
_SKIP_DIRS = {CHECKPOINTS_DIRNAME, PSEUDO_LABELS_DIRNAME, "wandb", "csv", "__pycache__"}
_SEED_OVERRIDE = re.compile(r"[+~]*seed=(?P<value>.*)")


class AggregateError(ValueError):
    """A missing folder or a chain file that cannot be read: the message names the path."""


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ChainRound:
    """One finished round of a chain: its task and ``{subset: {metric: value}}`` (fractions); the
    round's pseudo-label metrics, when recorded, sit under the subset ``POOL_SUBSET``."""

    round: int
    task: str
    results: dict[str, dict[str, float]]


@dataclass(frozen=True)
class ChainRecord:
    """One chain folder as the aggregate sees it."""

    path: Path
    name: str  # chain.json's "chain", else <parent>/<folder>
    rounds: list[ChainRound]
    config: dict[str, Any] = field(default_factory=dict)  # dotted keys (chain.json); {} without it
    swept: list[str] = field(default_factory=list)  # the sweep overrides that made this chain
    schedule: list[str] = field(default_factory=list)
    seed: int | str | None = None
    has_chain_json: bool = False


@dataclass
class Variant:
    """Chains that differ only in ``seed``; ``chains`` and ``seeds`` (labels, ``str(seed)``) run in
    parallel, sorted by seed."""

    label: str
    chains: list[ChainRecord]
    seeds: list[str]
    swept: list[str]  # the chains' sweep overrides without seed=...
    config: dict[str, Any]  # the chains' config without seed ({} for chains without chain.json)
    warnings: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> list[int]:
        return sorted({r.round for chain in self.chains for r in chain.rounds})


@dataclass(frozen=True)
class SummaryRow:
    """Mean and sample std (None with one seed) of one metric over a variant's seeds, with each value."""

    variant: str
    round: int
    task: str
    subset: str
    metric: str
    mean: float
    std: float | None
    n: int
    values: dict[str, float]  # seed label -> value (fraction)


@dataclass
class SeedSummary:
    variants: list[Variant]
    rows: list[SummaryRow]
    subsets: list[str]  # test subsets in order, then POOL_SUBSET when some round recorded pseudo-labels
    metrics: dict[str, list[str]]  # subset -> metric keys, primary first
    warnings: list[str]

    @property
    def seeds(self) -> list[str]:
        """Every variant's seeds, once, in order."""
        return sorted({s for v in self.variants for s in v.seeds}, key=_natural_key)

    def primary(self, subset: str) -> str:
        return self.metrics[subset][0]

    def row(self, variant: str, round_: int, subset: str, metric: str) -> SummaryRow | None:
        return self._index().get((variant, round_, subset, metric))

    def _index(self) -> dict[tuple[str, int, str, str], SummaryRow]:
        return {(r.variant, r.round, r.subset, r.metric): r for r in self.rows}


# ---------------------------------------------------------------------------------------- finding chains


def _natural_key(text: str) -> list[Any]:
    """Numbers compared as numbers: seed=2 < seed=10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise AggregateError(f"{path}: cannot read it as JSON ({err})") from err


def _numbers(path: Path, where: str, values: Any) -> dict[str, float]:
    """``{metric: value}`` with None values left out; anything else must be a number."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise AggregateError(f"{path}: {where} should be {{metric: value}}, got {str(values)[:200]}")
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AggregateError(f"{path}: {where}, {key!r} = {value!r} is not a number")
        out[str(key)] = float(value)
    return out


def read_rounds(path: str | os.PathLike[str]) -> list[ChainRound]:
    """A chain's ``rounds.json`` as `ChainRound` records, in round order."""
    path = Path(path)
    data = _read_json(path)
    rounds = data.get("rounds") if isinstance(data, dict) else None
    if not isinstance(rounds, list):
        raise AggregateError(f'{path}: expected {{"chain": ..., "rounds": [...]}}, got {str(data)[:200]}')
    records = []
    for i, entry in enumerate(rounds):
        if not isinstance(entry, dict) or isinstance(entry.get("round"), bool):
            raise AggregateError(f"{path}: rounds[{i}] should be an object with an integer 'round'")
        try:
            k = int(entry["round"])
        except (KeyError, TypeError, ValueError) as err:
            raise AggregateError(f"{path}: rounds[{i}] has no integer 'round' ({err})") from err
        results = entry.get("results") or {}
        if not isinstance(results, dict):
            raise AggregateError(f"{path}: round {k}: 'results' should be {{subset: {{metric: value}}}}")
        table = {str(s): _numbers(path, f"round {k}, subset {s!r}", v) for s, v in results.items()}
        pseudo = _numbers(path, f"round {k}, 'pseudo_labels'", entry.get("pseudo_labels"))
        if pseudo:
            table[POOL_SUBSET] = pseudo
        records.append(ChainRound(round=k, task=str(entry.get("task") or "std"), results=table))
    return sorted(records, key=lambda r: r.round)


def _seed_of(overrides: Iterable[str]) -> str | None:
    for item in overrides:
        found = _SEED_OVERRIDE.fullmatch(item.strip())
        if found:
            return found["value"]
    return None


def _without_seed(overrides: Iterable[str]) -> list[str]:
    return [o for o in overrides if not _SEED_OVERRIDE.fullmatch(o.strip())]


def _as_seed(value: Any) -> int | str | None:
    if value is None or isinstance(value, int):
        return value
    text = str(value)
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def load_chain(folder: str | os.PathLike[str]) -> ChainRecord:
    """Read one chain folder: ``rounds.json``, and ``chain.json`` when present."""
    folder = Path(folder)
    rounds = read_rounds(folder / ROUNDS_JSON)
    meta_path = folder / CHAIN_CONFIG_NAME
    if not meta_path.exists():
        return ChainRecord(
            path=folder,
            name=f"{folder.parent.name}/{folder.name}",
            rounds=rounds,
            seed=_as_seed(_seed_of(folder.name.split(","))),
        )
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise AggregateError(f'{meta_path}: expected {{"chain", "config": {{...}}, "swept", "schedule"}}')
    config = dict(meta.get("config") or {})
    swept = [str(o) for o in meta.get("swept") or []]
    seed = config["seed"] if "seed" in config else _seed_of(swept)
    return ChainRecord(
        path=folder,
        name=str(meta.get("chain") or f"{folder.parent.name}/{folder.name}"),
        rounds=rounds,
        config=config,
        swept=swept,
        schedule=[str(t) for t in meta.get("schedule") or config.get("ssl.schedule") or []],
        seed=_as_seed(seed),
        has_chain_json=True,
    )


def find_chain_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """Chain folders (each holds a ``rounds.json``) at or below ``path``, in natural order."""
    root = Path(path)
    if not root.exists():
        raise AggregateError(f"{root} does not exist (give a chain folder or a folder of chains)")
    if root.is_file():
        return [root.parent] if root.name == ROUNDS_JSON else []
    found = []
    for folder, dirs, files in os.walk(root):
        if ROUNDS_JSON in files:
            found.append(Path(folder))
        # a chain's rounds hold no chains, but a chain's folder can hold a sweep's chains (the same run_name
        # run once alone, then swept: outputs/train/x/ and outputs/train/x/seed=0/)
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS and not _ROUND.fullmatch(d)
        ]
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _as_list(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Any]:
    return [paths] if isinstance(paths, str | os.PathLike) else list(paths)


def find_chains(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[ChainRecord]:
    """Every chain at or below ``paths`` (a chain reached twice is read once)."""
    folders: list[Path] = []
    seen: set[Path] = set()
    for path in _as_list(paths):
        for folder in find_chain_dirs(path):
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                folders.append(folder)
    return [load_chain(folder) for folder in folders]


# ------------------------------------------------------------------------------------------- grouping


def _format_config_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_format_config_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _group_key(chain: ChainRecord) -> str:
    if chain.has_chain_json:
        config = {k: v for k, v in chain.config.items() if k != "seed"}
        return "config:" + json.dumps(config, sort_keys=True, default=str)
    name = ",".join(_without_seed(chain.path.name.split(",")))
    return "folder:" + json.dumps([str(chain.path.parent.resolve()), name])


def _folder_label(variant: Variant, with_parent: bool = False) -> str:
    """The chain folder's name less ``seed=<n>``; its parent's name (the sweep) when nothing is left."""
    folder = variant.chains[0].path
    name = ",".join(_without_seed(folder.name.split(",")))
    return "/".join([folder.parent.name] * (with_parent or not name) + [name] * bool(name))


def _unique(labels: list[str]) -> bool:
    return all(labels) and len(set(labels)) == len(labels)


def _label_variants(variants: list[Variant]) -> None:
    """Name each variant by its sweep overrides less seed (``ssl=curriculum``); else by the config keys
    whose values differ between variants; else by its folder name less ``seed=<n>``."""
    candidates = [",".join(v.swept) for v in variants]
    if not _unique(candidates) and all(v.chains[0].has_chain_json for v in variants):
        keys = list(dict.fromkeys(k for v in variants for k in v.config))
        differ = [
            k
            for k in keys
            if len({json.dumps([k in v.config, v.config.get(k)], default=str) for v in variants}) > 1
        ]
        candidates = [
            ",".join(f"{k}={_format_config_value(v.config[k]) if k in v.config else '-'}" for k in differ)
            for v in variants
        ]
    if not _unique(candidates):
        candidates = [_folder_label(v) for v in variants]
    if not _unique(candidates):
        candidates = [_folder_label(v, with_parent=True) for v in variants]
    if not _unique(candidates):
        candidates = [str(v.chains[0].path) for v in variants]
    for variant, label in zip(variants, candidates, strict=True):
        variant.label = label


def _seed_sort_key(seed: int | str | None) -> tuple[int, int, str]:
    if isinstance(seed, int):
        return (0, seed, "")
    return (1, 0, "" if seed is None else seed)


def group_by_seed(chains: Sequence[ChainRecord]) -> list[Variant]:
    """Chains whose config differs only in ``seed`` (chains without chain.json: whose folder name differs
    only in ``seed=<n>``) as variants, in the order of their first chain; each variant's ``warnings`` say
    when it has fewer than ``MIN_SEEDS`` seeds, a seed twice, or other seeds than the other variants."""
    groups: dict[str, list[ChainRecord]] = {}
    for chain in chains:
        groups.setdefault(_group_key(chain), []).append(chain)
    variants = []
    for members in groups.values():
        members = sorted(members, key=lambda c: (_seed_sort_key(c.seed), _natural_key(str(c.path))))
        seeds = ["?" if c.seed is None else str(c.seed) for c in members]
        warnings = []
        for seed in dict.fromkeys(s for s in seeds if seeds.count(s) > 1):
            paths = ", ".join(str(c.path) for c, s in zip(members, seeds, strict=True) if s == seed)
            warnings.append(f"seed {seed} appears in {seeds.count(seed)} chains ({paths})")
        for seed in set(seeds):  # make the labels unique: 0, 0#2, ...
            positions = [i for i, s in enumerate(seeds) if s == seed]
            for n, i in enumerate(positions[1:], start=2):
                seeds[i] = f"{seed}#{n}"
        first = members[0]
        variants.append(
            Variant(
                label="",
                chains=members,
                seeds=seeds,
                swept=_without_seed(first.swept),
                config={k: v for k, v in first.config.items() if k != "seed"},
                warnings=warnings,
            )
        )
    _label_variants(variants)
    all_seeds = {s for v in variants for s in v.seeds}
    for variant in variants:
        n = len(variant.seeds)
        if n < MIN_SEEDS:
            variant.warnings.insert(
                0,
                f"only {n} seed{'s' if n != 1 else ''} ({', '.join(variant.seeds)}): fewer than {MIN_SEEDS}, "
                "one seed is not evidence (run seed=0,1,2 or more)",
            )
        lacking = sorted(all_seeds - set(variant.seeds), key=_natural_key)
        if lacking:
            variant.warnings.append(
                f"seeds differ between variants: this one lacks seed {', '.join(lacking)} that others have"
            )
    return variants


# ------------------------------------------------------------------------------------------ aggregating


def _metric_rank(key: str) -> int:
    base = key.removeprefix("pl_")
    return next((i for i, p in enumerate(("nme", "fr@", "auc")) if base.startswith(p)), 3)


def _dataset_facts(metas: Iterable[str]) -> tuple[list[str], list[str]]:
    """(metric keys, test subset keys) of the chains' dataset YAMLs (``data.meta``), primary first."""
    from pipnet_lit.datasets.meta import load_dataset_meta

    keys: list[str] = []
    subsets: list[str] = []
    for meta in dict.fromkeys(metas):
        try:
            info = load_dataset_meta(meta)
        except (ValueError, OSError):  # MetaError, or a YAML path relative to the job's folder: key order
            continue
        keys += [m.key for m in info.metrics]
        subsets += [f"{info.name}_{s}" for s in info.test_subsets]
    return list(dict.fromkeys(keys)), list(dict.fromkeys(subsets))


def aggregate(variants: Sequence[Variant]) -> SeedSummary:
    """Mean, sample std (ddof=1; None with one seed), n and each seed's value per variant × round ×
    subset × metric; values missing (None) in a chain leave that seed out of that row's n."""
    metas = [str(c.config["data.meta"]) for v in variants for c in v.chains if c.config.get("data.meta")]
    meta_keys, meta_subsets = _dataset_facts(metas)
    seen_subsets: list[str] = []
    seen_keys: dict[str, list[str]] = {}
    rows = []
    warnings = [f"{v.label}: {w}" for v in variants for w in v.warnings]
    for variant in variants:
        for k in variant.rounds:
            finished = [
                (seed, r)
                for chain, seed in zip(variant.chains, variant.seeds, strict=True)
                for r in chain.rounds
                if r.round == k
            ]
            if len(finished) < len(variant.seeds):
                missing = [s for s in variant.seeds if s not in {seed for seed, _ in finished}]
                warnings.append(
                    f"{variant.label}: round {k}: {len(finished)} of {len(variant.seeds)} seeds finished "
                    f"(seed {', '.join(missing)} not yet)"
                )
            task = "/".join(dict.fromkeys(r.task for _, r in finished))
            subsets = list(dict.fromkeys(s for _, r in finished for s in r.results))
            seen_subsets += subsets
            for subset in subsets:
                keys = list(dict.fromkeys(m for _, r in finished for m in r.results.get(subset, {})))
                seen_keys.setdefault(subset, [])
                seen_keys[subset] += keys
                for metric in keys:
                    values = {
                        seed: r.results[subset][metric]
                        for seed, r in finished
                        if metric in r.results.get(subset, {})
                    }
                    array = np.array(list(values.values()), dtype=np.float64)
                    rows.append(
                        SummaryRow(
                            variant=variant.label,
                            round=k,
                            task=task,
                            subset=subset,
                            metric=metric,
                            mean=float(array.mean()),
                            std=float(array.std(ddof=1)) if array.size > 1 else None,
                            n=int(array.size),
                            values=values,
                        )
                    )
    subsets = list(dict.fromkeys([s for s in meta_subsets if s in seen_subsets] + seen_subsets))
    subsets = [s for s in subsets if s != POOL_SUBSET] + ([POOL_SUBSET] if POOL_SUBSET in subsets else [])
    metrics = {}
    for subset in subsets:
        present = set(seen_keys[subset])
        ordered = list(dict.fromkeys([k for k in meta_keys if k in present] + seen_keys[subset]))
        metrics[subset] = sorted(ordered, key=_metric_rank)  # stable: the dataset's primary NME first
    order = {s: i for i, s in enumerate(subsets)}
    rank = {(s, m): i for s in subsets for i, m in enumerate(metrics[s])}
    variant_rank = {v.label: i for i, v in enumerate(variants)}
    rows.sort(key=lambda r: (order[r.subset], r.round, variant_rank[r.variant], rank[(r.subset, r.metric)]))
    return SeedSummary(
        variants=list(variants), rows=rows, subsets=subsets, metrics=metrics, warnings=warnings
    )


# ------------------------------------------------------------------------------------------- formatting


def format_mean_std(row: SummaryRow | None) -> str:
    """``mean ± std (n)`` in the metric's unit; ``mean (1)`` with one seed; ``-`` without a row."""
    if row is None:
        return "-"
    mean = format_metric(row.metric, row.mean)
    if row.std is None:
        return f"{mean} ({row.n})"
    return f"{mean} ± {format_metric(row.metric, row.std)} ({row.n})"


def _tasks(summary: SeedSummary, subset: str, k: int) -> str:
    tasks = [r.task for r in summary.rows if r.subset == subset and r.round == k]
    return " / ".join(dict.fromkeys(tasks)) or "-"


def _rounds(summary: SeedSummary, subset: str) -> list[int]:
    return sorted({r.round for r in summary.rows if r.subset == subset})


def _subset_title(subset: str) -> str:
    return f"{POOL_SUBSET} (the pool's pseudo-labels)" if subset == POOL_SUBSET else subset


def seed_markdown(summary: SeedSummary) -> str:
    """The ``seeds.md`` text."""
    labels = [v.label for v in summary.variants]
    lines = [
        "# Seed aggregates",
        "",
        "Chains that differ only in `seed` form a variant. Each cell: mean ± sample std (ddof=1) over seeds, "
        "(n) = seeds with that round finished; NME and FR in %, AUC as a fraction.",
        "",
        markdown_table(
            ["variant", "seeds", "rounds", "chains"],
            [
                [
                    v.label,
                    ", ".join(v.seeds),
                    ", ".join(str(k) for k in v.rounds),
                    ", ".join(f"`{c.name}`" for c in v.chains),
                ]
                for v in summary.variants
            ],
        ),
        "",
    ]
    if summary.warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in summary.warnings] + [""]
    index = summary._index()
    for subset in summary.subsets:
        primary = summary.primary(subset)
        rounds = _rounds(summary, subset)
        lines += [f"## {_subset_title(subset)}", "", f"{metric_header(primary)}, per round:", ""]
        body = [
            [str(k), _tasks(summary, subset, k)]
            + [format_mean_std(index.get((label, k, subset, primary))) for label in labels]
            for k in rounds
        ]
        lines += [markdown_table(["round", "task", *labels], body), "", "Every metric:", ""]
        keys = summary.metrics[subset]
        body = []
        for k in rounds:
            for variant in summary.variants:
                cells = [index.get((variant.label, k, subset, m)) for m in keys]
                task = next((c.task for c in cells if c is not None), None)
                if task is not None:
                    body.append([str(k), variant.label, task] + [format_mean_std(c) for c in cells])
        lines += [markdown_table(["round", "variant", "task", *map(metric_header, keys)], body), ""]
    seeds = summary.seeds
    lines += ["## Each seed's values", ""]
    body = [
        [r.variant, str(r.round), r.task, r.subset, metric_header(r.metric)]
        + [format_metric(r.metric, r.values.get(s)) for s in seeds]
        for r in summary.rows
    ]
    lines += [
        markdown_table(["variant", "round", "task", "subset", "metric", *(f"seed {s}" for s in seeds)], body)
    ]
    return "\n".join(lines) + "\n"


def seed_csv(summary: SeedSummary) -> str:
    """The ``seeds.csv`` text: one row per variant × round × subset × metric, fractions (``repr``)."""
    seeds = summary.seeds
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(long_columns(summary))
    writer.writerows([["" if v is None else v for v in row] for row in long_rows(summary, seeds)])
    return buffer.getvalue()


def long_columns(summary: SeedSummary) -> list[str]:
    return ["variant", "round", "task", "subset", "metric", "mean", "std", "n"] + [
        f"seed_{s}" for s in summary.seeds
    ]


def long_rows(summary: SeedSummary, seeds: Sequence[str] | None = None) -> list[list[Any]]:
    """The summary's rows as lists (numbers as ``repr`` strings; None where a value is missing)."""
    seeds = summary.seeds if seeds is None else seeds

    def number(value: float | None) -> str | None:
        return None if value is None else repr(float(value))

    return [
        [r.variant, r.round, r.task, r.subset, r.metric, number(r.mean), number(r.std), r.n]
        + [number(r.values.get(s)) for s in seeds]
        for r in summary.rows
    ]


# ----------------------------------------------------------------------------------------------- files


def plot_seed_summary(summary: SeedSummary, path: str | os.PathLike[str]) -> Path:
    """``seeds.png``: per test subset, the primary NME (%) per round, one line per variant, ± std band."""
    subsets = [s for s in summary.subsets if s != POOL_SUBSET] or summary.subsets
    fig = new_figure(5.2 * max(len(subsets), 1), 4.2)
    index = summary._index()
    for i, subset in enumerate(subsets):
        ax = fig.add_subplot(1, len(subsets), i + 1)
        primary = summary.primary(subset)
        scale = 100.0 if is_percent(primary) else 1.0
        for variant in summary.variants:
            rows = [
                row
                for k in _rounds(summary, subset)
                if (row := index.get((variant.label, k, subset, primary)))
            ]
            if not rows:
                continue
            xs = np.array([r.round for r in rows], dtype=float)
            mean = scale * np.array([r.mean for r in rows])
            std = scale * np.array([0.0 if r.std is None else r.std for r in rows])
            (line,) = ax.plot(xs, mean, marker="o", label=f"{variant.label} (n={len(variant.seeds)})")
            ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        rounds = _rounds(summary, subset)
        ax.set_xticks(rounds, [f"{k}\n{_tasks(summary, subset, k).replace(' / ', '/')}" for k in rounds])
        unit = " (%)" if is_percent(primary) else ""
        ax.set(title=_subset_title(subset), xlabel="round / task", ylabel=f"{primary}{unit}, mean ± std")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def write_seed_summary(summary: SeedSummary, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``seeds.md``, ``seeds.csv`` and ``seeds.png`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    return {
        "md": atomic_write_text(out / SEEDS_MD, seed_markdown(summary)),
        "csv": atomic_write_text(out / SEEDS_CSV, seed_csv(summary)),
        "png": plot_seed_summary(summary, out / SEEDS_PNG),
    }


def seed_tables(summary: SeedSummary) -> list[Table]:
    """Rich tables for the terminal: per subset, rounds × variants, the primary metric's mean ± std (n)."""
    index = summary._index()
    tables = []
    for subset in summary.subsets:
        primary = summary.primary(subset)
        table = Table(
            title=escape(
                f"Seed aggregates, {_subset_title(subset)}: {metric_header(primary)}, mean ± std (n)"
            )
        )
        table.add_column("round", justify="right")
        table.add_column("task")
        for variant in summary.variants:
            table.add_column(escape(f"{variant.label}\nseeds {', '.join(variant.seeds)}"), justify="right")
        for k in _rounds(summary, subset):
            cells = [format_mean_std(index.get((v.label, k, subset, primary))) for v in summary.variants]
            table.add_row(str(k), escape(_tasks(summary, subset, k)), *cells)
        tables.append(table)
    return tables


def print_seed_summary(summary: SeedSummary, console: Console | None = None) -> None:
    console = console or Console()
    for table in seed_tables(summary):
        console.print(table)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)


# ------------------------------------------------------------------------------------------------- W&B


def log_seed_summary_to_wandb(
    summary: SeedSummary,
    png_path: str | os.PathLike[str],
    *,
    project: str,
    group: str | None,
    save_dir: str | os.PathLike[str],
    name: str | None = None,
) -> None:
    """One W&B run (job type ``seed-aggregate``) holding the long table and the figure; finished even
    when logging fails. ``WANDB_MODE=offline`` writes it under ``<save_dir>/wandb/offline-run-*``."""
    import wandb

    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        group=group,
        name=name,
        job_type="seed-aggregate",
        dir=str(save_dir),
        reinit="finish_previous",
        config={
            "variants": {
                v.label: {"seeds": v.seeds, "chains": [c.name for c in v.chains]} for v in summary.variants
            },
            "warnings": summary.warnings,
        },
    )
    try:
        table = wandb.Table(columns=long_columns(summary), data=long_rows(summary), allow_mixed_types=True)
        run.log({"seed_aggregate/rows": table, "seed_aggregate/nme": wandb.Image(str(png_path))})
    finally:
        run.finish()


# ------------------------------------------------------------------------------------------- the whole


def summarize(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> SeedSummary | None:
    """Find, group and aggregate the chains under ``paths``; None when there are none."""
    chains = find_chains(paths)
    return aggregate(group_by_seed(chains)) if chains else None


def summarize_chains(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    wandb: Mapping[str, Any] | bool | None = None,
) -> dict[str, Path]:
    """Find + group + aggregate the chains under ``paths``, write ``seeds.md`` / ``.csv`` / ``.png`` into
    ``out_dir`` and print the tables. ``wandb``: True or ``{"project", "group", "save_dir", "name"}`` also
    logs them to a W&B run (defaults: project ``pipnet-lit``, group the first path's folder name, save_dir
    ``out_dir``)."""
    summary = summarize(paths)
    if summary is None:
        shown = ", ".join(str(p) for p in _as_list(paths))
        raise AggregateError(f"no chains in {shown}: no {ROUNDS_JSON} in it or below it")
    files = write_seed_summary(summary, out_dir)
    print_seed_summary(summary)
    if wandb:
        options = dict(wandb) if isinstance(wandb, Mapping) else {}
        log_seed_summary_to_wandb(
            summary,
            files["png"],
            project=options.get("project", "pipnet-lit"),
            group=options.get("group", Path(_as_list(paths)[0]).resolve().name),
            save_dir=options.get("save_dir", out_dir),
            name=options.get("name"),
        )
    return files
