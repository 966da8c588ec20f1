"""Compare finished runs: `python -m pipnet_lit.compare RUN_OR_SWEEP_DIR... [--out DIR] [--threshold 0.1]`.

Reads run folders only (no W&B, no network, no GPU): every folder below the given ones that holds a
``test_metrics.json`` is a run; its ``.hydra/config.yaml`` (when present) gives the backbone and the dataset,
and its ``test_per_image.csv`` (when present) the per-image NMEs. Writes ``<out>/report.md`` (runs × test
subsets × metrics, NME / FR in %, AUC as a fraction, the paper's published NME and the difference beside each
matching row; printed too) and ``<out>/ced_<subset>.png`` (the runs' cumulative error curves overlaid).
When the folders hold self-training chains (``rounds.json``), also the chains' seed aggregates
(``pipnet_lit.ssl.aggregate``: ``<out>/seeds.md``, ``seeds.csv``, ``seeds.png``, printed; ``--no-seeds`` skips
them). Cells and figures come from `pipnet_lit.presentation`; one run's files from `pipnet_lit.run_results`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipnet_lit import presentation
from pipnet_lit.cli import Command, option
from pipnet_lit.files import atomic_write_text
from pipnet_lit.paper import PaperNME, paper_nmes
from pipnet_lit.presentation import format_metric, markdown_table, metric_header
from pipnet_lit.run_results import METRICS_NAME, PER_IMAGE_NAME, read_per_image_results
from pipnet_lit.ssl.aggregate import (
    SEEDS_MD,
    AggregateError,
    SeedSummary,
    print_seed_summary,
    summarize,
    write_seed_summary,
)

METRICS_FILE = METRICS_NAME
PER_IMAGE_FILE = PER_IMAGE_NAME
REPORT_FILE = "report.md"
#: Folders never searched for runs: Hydra's own, checkpoints, pseudo-labels, W&B files.
_SKIP_DIRS = {"checkpoints", "pseudo_labels", "wandb", "csv", "__pycache__"}
_ROUND = re.compile(r"round_\d+")


class ReportError(ValueError):
    """A folder without runs, or a run file that cannot be read: the message names the path."""


@dataclass
class Run:
    """One finished run folder as the report sees it."""

    label: str
    path: Path
    results: dict[str, dict[str, float]]  # {subset: {metric: value}}, fractions (test_metrics.json)
    backbone: str | None = None  # model.backbone (or the checkpoint's, for eval runs)
    dataset: str | None = None  # data.meta
    run_name: str | None = None
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml
    primary: str | None = None  # the dataset's primary metric key (FR / AUC / CED use it)
    metric_order: list[str] = field(default_factory=list)  # the dataset YAML's metric keys, in order
    subset_order: list[str] = field(default_factory=list)  # the dataset YAML's test subsets, as keys
    per_image: Path | None = None  # test_per_image.csv, when the run wrote one


# ---------------------------------------------------------------------------------------- finding runs


def find_run_dirs(path: str | Path) -> list[Path]:
    """Run folders at or below ``path`` (each holds a ``test_metrics.json``), in natural order."""
    root = Path(path)
    if not root.exists():
        raise ReportError(
            f"{root} does not exist (give a run folder or a folder of runs, e.g. outputs/train)"
        )
    if root.is_file():
        if root.name == METRICS_FILE:
            return [root.parent]
        raise ReportError(
            f"{root} is a file: give a run folder (one holding {METRICS_FILE}) or a folder of runs"
        )
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        if METRICS_FILE in files:
            found.append(Path(folder))
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _natural_key(text: str) -> list[Any]:
    """Sort key with numbers compared as numbers: round_2 < round_10, multirun job 9 < 10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def run_labels(folders: Sequence[Path]) -> list[str]:
    """Short unique names: each folder relative to the folders' common parent.

    A lone run is named by its folder; a self-training round ``round_<k>`` always carries its chain's name
    (``chain/round_k``).
    """
    folders = [Path(f).resolve() for f in folders]
    if not folders:
        return []
    common = Path(os.path.commonpath(folders))
    if len(folders) == 1:
        common = folders[0].parent
    labels = []
    for folder in folders:
        rel = folder.relative_to(common).as_posix()
        if rel == ".":  # a run folder holding other runs
            rel, common_for_round = folder.name, folder.parent
        else:
            common_for_round = common
        if _ROUND.fullmatch(rel.split("/")[0]):
            rel = f"{common_for_round.name}/{rel}"
        labels.append(rel)
    return labels


def collect_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run at or below ``paths`` (a run given twice is read once), labelled by ``run_labels``."""
    folders: list[Path] = []
    for path in paths:
        found = find_run_dirs(path)
        if not found:
            raise ReportError(
                f"no runs in {path}: no {METRICS_FILE} in it or below it (a run folder holds one once "
                "training or python -m pipnet_lit.eval has tested a model)"
            )
        folders += [f for f in found if f.resolve() not in {g.resolve() for g in folders}]
    return [load_run(folder, label) for folder, label in zip(folders, run_labels(folders), strict=True)]


# --------------------------------------------------------------------------------------- reading a run


def read_metrics(path: Path) -> dict[str, dict[str, float]]:
    """``test_metrics.json``: {subset: {metric: value}} (fractions)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read it as JSON ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ReportError(f"{path}: expected {{subset: {{metric: value}}}}, got {str(data)[:200]}")
    results: dict[str, dict[str, float]] = {}
    for subset, values in data.items():
        try:
            results[subset] = {str(k): float(v) for k, v in values.items()}
        except (TypeError, ValueError) as err:
            raise ReportError(
                f"{path}: subset {subset!r} holds a value that is not a number ({err})"
            ) from err
    return results


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def _get(cfg: Any, dotted: str) -> Any:
    """``cfg['a']['b']`` for ``a.b``; None when missing or an unresolved interpolation (``${...}``)."""
    for key in dotted.split("."):
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    if isinstance(cfg, str) and "${" in cfg:
        return None
    return cfg


def _job_cwd(folder: Path) -> Path | None:
    cwd = _get(_read_yaml(folder / ".hydra" / "hydra.yaml"), "hydra.runtime.cwd")
    return Path(cwd) if cwd else None


def _existing(path: str, cwd: Path | None) -> Path | None:
    """``path`` as given, else relative to the job's working folder."""
    candidates = [Path(path)] + ([cwd / path] if cwd is not None and not Path(path).is_absolute() else [])
    return next((p for p in candidates if p.is_file()), None)


def _checkpoint_backbone(ckpt_path: str, cwd: Path | None) -> str | None:
    """``model.backbone`` from a checkpoint's hyper-parameters (eval runs have no model config)."""
    path = _existing(ckpt_path, cwd)
    if path is None:
        return None
    try:
        import torch

        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return str(ckpt["hyper_parameters"]["backbone"])
    except Exception:  # an unreadable checkpoint only costs the paper column
        return None


def _dataset_facts(meta: str | None, cwd: Path | None) -> tuple[str | None, list[str], list[str]]:
    """(primary metric key, metric keys, test subset keys) of the dataset YAML ``meta``; unknown: empty."""
    if not meta:
        return None, [], []
    from pipnet_lit.datasets.meta import MetaError, load_dataset_meta

    candidates = [meta]
    if cwd is not None and meta.endswith((".yaml", ".yml")) and not Path(meta).is_absolute():
        candidates.append(str(cwd / meta))
    for candidate in candidates:
        try:
            info = load_dataset_meta(candidate)
        except (MetaError, OSError):
            continue
        keys = [m.key for m in info.metrics]
        return keys[0], keys, [f"{info.name}_{s}" for s in info.test_subsets]
    return None, [], []


def load_run(folder: str | Path, label: str | None = None) -> Run:
    """Read one run folder: ``test_metrics.json``, and when present ``.hydra/`` and ``test_per_image.csv``."""
    folder = Path(folder)
    results = read_metrics(folder / METRICS_FILE)
    cfg = _read_yaml(folder / ".hydra" / "config.yaml") or {}
    overrides = _read_yaml(folder / ".hydra" / "overrides.yaml") or []
    cwd = _job_cwd(folder)
    backbone = _get(cfg, "model.backbone")
    if backbone is None and _get(cfg, "ckpt_path"):
        backbone = _checkpoint_backbone(str(_get(cfg, "ckpt_path")), cwd)
    dataset = _get(cfg, "data.meta")
    primary, metric_order, subset_order = _dataset_facts(str(dataset) if dataset else None, cwd)
    per_image = folder / PER_IMAGE_FILE
    return Run(
        label=label or folder.name,
        path=folder,
        results=results,
        backbone=str(backbone) if backbone is not None else None,
        dataset=str(dataset) if dataset is not None else None,
        run_name=_get(cfg, "run_name"),
        overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
        primary=primary,
        metric_order=metric_order,
        subset_order=subset_order,
        per_image=per_image if per_image.is_file() else None,
    )


def read_per_image(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``test_per_image.csv`` (``subset, name, <NME keys>``, primary first) -> {subset: {key: (N,) NMEs}}."""
    try:
        per_subset = read_per_image_results(path)
    except (OSError, ValueError) as err:
        raise ReportError(f"{err} (rewrite it by testing the run again, or remove it)") from err
    return {subset: rows.nmes for subset, rows in per_subset.items()}


# ------------------------------------------------------------------------------------------- the table


def _ordered(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def subset_order(runs: Sequence[Run]) -> list[str]:
    """Every tested subset once: each run's in its dataset YAML's order, first appearance across runs."""
    keys: list[str] = []
    for run in runs:
        keys += [s for s in run.subset_order if s in run.results] + list(run.results)
    return _ordered(keys)


def metric_order(runs: Sequence[Run]) -> list[str]:
    """Every metric key once: NMEs (dataset YAML order), then FR, then AUC, then anything else."""
    keys: list[str] = []
    for run in runs:
        keys += run.metric_order
        for values in run.results.values():
            keys += list(values)
    keys = _ordered(keys)
    present = {k for run in runs for values in run.results.values() for k in values}
    rank = {"nme": 0, "fr@": 1, "auc": 2}
    return sorted((k for k in keys if k in present), key=lambda k: rank.get(k[:3], 3))


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _paper_for(run: Run, subset: str) -> list[tuple[PaperNME, float | None]]:
    """Published NMEs matching this row, each with the run's value under that metric key (fraction)."""
    values = run.results.get(subset, {})
    return [(p, values.get(p.metric)) for p in paper_nmes(subset, run.backbone, list(values))]


def results_table(runs: Sequence[Run]) -> str:
    """The markdown table: one row per (subset, run), NME / FR in %, AUC as a fraction, paper and Δ."""
    keys = metric_order(runs)
    subsets = subset_order(runs)
    with_paper = any(_paper_for(run, s) for run in runs for s in run.results)
    header = ["subset", "run", "backbone"] + [metric_header(k) for k in keys]
    if with_paper:
        header += ["paper metric", "paper (%)", "Δ (%)"]
    rows = []
    for subset in subsets:
        for run in runs:
            if subset not in run.results:
                continue
            values = run.results[subset]
            row = [subset, run.label, run.backbone or "?"] + [format_metric(k, values.get(k)) for k in keys]
            if with_paper:
                matches = _paper_for(run, subset)
                row += [
                    "; ".join(p.metric for p, _ in matches) or "-",
                    "; ".join(f"{p.nme:.2f}" for p, _ in matches) or "-",
                    "; ".join(f"{100 * v - p.nme:+.2f}" for p, v in matches if v is not None) or "-",
                ]
            rows.append(row)
    return markdown_table(header, rows)


def runs_table(runs: Sequence[Run]) -> str:
    """Where each run lives, what it ran, and the overrides that set it apart from the others."""
    shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    rows = []
    for run in runs:
        differs = [o for o in run.overrides if o not in shared] if len(runs) > 1 else []
        rows.append(
            [
                run.label,
                f"`{_display_path(run.path)}`",
                run.dataset or "?",
                run.backbone or "?",
                run.primary or "?",
                "yes" if run.per_image else "no",
                " ".join(f"`{o}`" for o in differs) or "-",
            ]
        )
    header = ["run", "folder", "data.meta", "backbone", "primary", PER_IMAGE_FILE, "overrides that differ"]
    return markdown_table(header, rows)


def _display_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


# ----------------------------------------------------------------------------------------- CED figures


def ced_filename(subset: str) -> str:
    return "ced_" + re.sub(r"[^A-Za-z0-9_.-]", "_", subset) + ".png"


def plot_ced(
    curves: Sequence[tuple[str, np.ndarray]],
    path: str | Path,
    title: str,
    xlabel: str,
    threshold: float = 0.1,
) -> Path:
    """Overlay the runs' cumulative error curves ((label, per-image NMEs (N,), fractions) each) in a PNG
    (`pipnet_lit.presentation.plot_ced`, its `COMPARE_CED` style)."""
    fig = presentation.plot_ced(
        [presentation.ced_curve_of(label, nmes, threshold) for label, nmes in curves],
        title=title,
        xlabel=xlabel,
        xmax=threshold,
        style=presentation.COMPARE_CED,
    )
    return presentation.save_figure(fig, path, dpi=120, bbox_inches="tight")


def write_ced_figures(runs: Sequence[Run], out: Path, threshold: float = 0.1) -> tuple[list[Path], list[str]]:
    """One CED figure per test subset over the runs with per-image NMEs. Returns (files, notes)."""
    notes = [
        f"{run.label}: no {PER_IMAGE_FILE}, left out of the CED figures"
        for run in runs
        if run.per_image is None
    ]
    per_image = {run.label: read_per_image(run.per_image) for run in runs if run.per_image is not None}
    files = []
    for subset in subset_order(runs):
        curves, keys = [], []
        for run in runs:
            columns = per_image.get(run.label, {}).get(subset)
            if not columns:
                continue
            key = run.primary if run.primary in columns else next(iter(columns))  # the file lists it first
            if columns[key].size == 0:
                continue
            curves.append((run.label, columns[key]))
            keys.append(key)
        if not curves:
            continue
        key_text = ", ".join(_ordered(keys))
        title = f"CED, {subset}"
        path = plot_ced(curves, out / ced_filename(subset), title, f"NME, {key_text} (%)", threshold)
        files.append(path)
        notes.append(f"`{path.name}`: {', '.join(label for label, _ in curves)} ({key_text})")
    return files, notes


# ------------------------------------------------------------------------------------------ the report


@dataclass
class Report:
    runs: list[Run]
    markdown: str
    path: Path  # <out>/report.md
    figures: list[Path]
    seed_summary: SeedSummary | None = None  # when the folders hold self-training chains
    seed_files: dict[str, Path] = field(default_factory=dict)  # seeds.md, seeds.csv, seeds.png


def make_report(
    paths: Sequence[str | Path], out: str | Path, threshold: float = 0.1, seeds: bool = True
) -> Report:
    """Collect the runs under ``paths``, write ``<out>/report.md`` and ``<out>/ced_<subset>.png``; with
    ``seeds``, also the seed aggregates of the chains under ``paths`` (``<out>/seeds.*``), when any."""
    if not (0 < threshold < 1):
        raise ReportError(f"--threshold must be a fraction in (0, 1) (0.1 = 10% NME), got {threshold}")
    runs = collect_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures, notes = write_ced_figures(runs, out, threshold)
    try:
        summary = summarize(paths) if seeds else None
    except AggregateError as err:
        raise ReportError(str(err)) from err
    seed_files = write_seed_summary(summary, out) if summary is not None else {}
    table = results_table(runs)
    lines = [
        "# Run comparison",
        "",
        "NME and FR in %, AUC as a fraction (FR and AUC at the primary NME, as each run computed them).",
    ]
    if "paper (%)" in table.splitlines()[0]:
        lines += [
            "",
            "paper: the published PIPNet NME of the same subset, metric key and backbone "
            "(`pipnet_lit.paper`); Δ = run − paper in percentage points (negative: lower error).",
        ]
    lines += [
        "",
        table,
        "",
        "## Runs",
        "",
        runs_table(runs),
        "",
        f"## CED figures (NME ≤ {100 * threshold:g}%)",
        "",
    ]
    if not figures:
        lines.append(f"No CED figures: no run has a {PER_IMAGE_FILE} with per-image NMEs.")
    lines += [f"- {note}" for note in notes]
    if summary is not None:
        chains = sum(len(v.chains) for v in summary.variants)
        lines += [
            "",
            "## Seed aggregates",
            "",
            f"{chains} self-training chain{'s' if chains != 1 else ''} in {len(summary.variants)} variant"
            f"{'s' if len(summary.variants) != 1 else ''} ({', '.join(v.label for v in summary.variants)}): "
            f"mean ± std over seeds per round in [{SEEDS_MD}]({SEEDS_MD}) "
            f"(also `{seed_files['csv'].name}`, `{seed_files['png'].name}`).",
        ]
        lines += [f"- warning: {w}" for w in summary.warnings]
    markdown = "\n".join(lines) + "\n"
    path = out / REPORT_FILE
    atomic_write_text(path, markdown)
    return Report(
        runs=runs,
        markdown=markdown,
        path=path,
        figures=figures,
        seed_summary=summary,
        seed_files=seed_files,
    )


@dataclass(kw_only=True)
class CompareOptions:
    """The command line of ``python -m pipnet_lit.compare`` (`COMMAND`)."""

    paths: list[Path] = option(
        positional=True, metavar="PATH", help="run folders or folders of runs (sweeps, self-training chains)"
    )
    out: Path | None = option(
        None, help="where report.md and ced_<subset>.png go (default: <first path>/report)"
    )
    threshold: float = option(0.1, help="CED x-range as an NME fraction")
    seeds: bool = option(
        True, help="the self-training chains' seed aggregates (seeds.md / .csv / .png); --no-seeds skips them"
    )


COMMAND = Command(CompareOptions, prog="python -m pipnet_lit.compare", doc=__doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns its exit code (0 written, 2 bad options or runs that cannot be read)."""
    opts = COMMAND.parse_or_exit(argv)
    first = opts.paths[0]
    out = opts.out or (first.parent if first.is_file() else first) / "report"
    try:
        report = make_report(opts.paths, out, opts.threshold, seeds=opts.seeds)
    except ReportError as err:
        print(f"{COMMAND.prog}: error: {err}", file=sys.stderr)
        return 2
    print(report.markdown)
    if report.seed_summary is not None:
        print_seed_summary(report.seed_summary)
    written = [*report.figures, *report.seed_files.values()]
    print(f"wrote {report.path}" + "".join(f", {p.name}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
