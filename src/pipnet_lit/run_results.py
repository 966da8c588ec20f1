"""One run's results: the NME / FR / AUC table printed after testing, its JSON twin (`test_metrics.json`),
and the per-image NMEs (`test_per_image.csv`) that any run can be re-scored or re-plotted from.

Cells and tables look as `pipnet_lit.presentation` draws them; `pipnet_lit.compare` reads these files back to
compare runs."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from pipnet_lit.files import write_csv_atomic, write_json_atomic
from pipnet_lit.presentation import metrics_table

if TYPE_CHECKING:
    from pipnet_lit.lit_module import EvalResults

METRICS_NAME = "test_metrics.json"
PER_IMAGE_NAME = "test_per_image.csv"


def print_metrics(results: dict[str, dict[str, float]], title: str = "Test results") -> None:
    Console().print(metrics_table(results, title))


def write_metrics(results: dict[str, dict[str, float]], path: str | Path) -> Path:
    """Write results as JSON (fractions, not percent)."""
    return write_json_atomic(path, results)


def results_from_metrics(metrics: Mapping[str, Any], stage: str = "test") -> dict[str, dict[str, float]]:
    """``{subset: {metric: value}}`` from logged ``<stage>/<subset>/<metric>`` values (e.g. a trainer's
    ``callback_metrics``); keys of other shapes (``test/nme``, ``train/loss``) are left out."""
    results: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == stage:
            results.setdefault(parts[1], {})[parts[2]] = float(value)
    return results


def tested_results(model: Any, trainer: Any) -> dict[str, dict[str, float]]:
    """The last ``trainer.test`` pass's ``{subset: {metric: value}}``: the module's own exact results, or,
    when the test ran in spawned workers (ddp_spawn) and this process's module holds none, the synced
    metrics the workers sent back in ``trainer.callback_metrics``."""
    return model.test_results or results_from_metrics(trainer.callback_metrics, "test")


def report(results: dict[str, dict[str, float]], output_dir: str | Path, title: str = "Test results") -> Path:
    """Print the results table and write `test_metrics.json` into a run folder."""
    print_metrics(results, title)
    return write_metrics(results, Path(output_dir) / METRICS_NAME)


@dataclass
class PerImage:
    """One subset's rows of a per-image results file: image names and NME key -> (N,) float64 NMEs."""

    names: list[str]
    nmes: dict[str, np.ndarray]


def write_per_image_results(results: dict[str, EvalResults], keys: list[str], path: str | Path) -> Path:
    """One CSV row per (subset, image): ``subset, name, <key>...``, the per-image NMEs (fractions, exact).

    ``results`` maps each subset key to its `EvalResults` (the evaluation pass); rows follow the subsets'
    order, images in index order within each subset. Values are written with ``repr`` (they read back
    bit-exact).
    """
    header = [["subset", "name", *keys]]
    rows = (
        [subset, name, *(repr(float(res.nmes[key][row])) for key in keys)]
        for subset, res in results.items()
        for row, name in enumerate(res.names)
    )
    return write_csv_atomic(path, [*header, *rows])


def read_per_image_results(path: str | Path) -> dict[str, PerImage]:
    """Read a `write_per_image_results` file (a run's ``test_per_image.csv``): subset -> `PerImage`."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[:2] != ["subset", "name"]:
            raise ValueError(f"{path}: not a per-image results file (its header must start subset,name)")
        keys = header[2:]
        rows: dict[str, list[list[str]]] = {}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}, line {line}: {len(row)} values, the header has {len(header)}")
            rows.setdefault(row[0], []).append(row[1:])
    return {
        subset: PerImage(
            names=[r[0] for r in body],
            nmes={
                key: np.array([float(r[1 + k]) for r in body], dtype=np.float64) for k, key in enumerate(keys)
            },
        )
        for subset, body in rows.items()
    }
