"""Human-readable results: the NME / FR / AUC table printed after testing, and its JSON twin."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def metrics_table(results: dict[str, dict[str, float]], title: str = "Test results") -> Table:
    """A table with one row per subset; NME and FR in percent, AUC as a fraction (as papers report)."""
    table = Table(title=title)
    keys: list[str] = []
    for values in results.values():
        keys += [k for k in values if k not in keys]
    table.add_column("subset")
    for key in keys:
        unit = "" if key.startswith("auc") else " (%)"
        table.add_column(f"{key}{unit}", justify="right")
    for subset, values in results.items():
        cells = []
        for key in keys:
            value = values.get(key)
            if value is None:
                cells.append("-")
            elif key.startswith("auc"):
                cells.append(f"{value:.4f}")
            else:
                cells.append(f"{100 * value:.2f}")
        table.add_row(subset, *cells)
    return table


def print_metrics(results: dict[str, dict[str, float]], title: str = "Test results") -> None:
    Console().print(metrics_table(results, title))


def write_metrics(results: dict[str, dict[str, float]], path: str | Path) -> Path:
    """Write results as JSON (fractions, not percent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def report(results: dict[str, dict[str, float]], output_dir: str | Path, title: str = "Test results") -> Path:
    """Print the results table and write `test_metrics.json` into a run folder."""
    print_metrics(results, title)
    return write_metrics(results, Path(output_dir) / "test_metrics.json")
