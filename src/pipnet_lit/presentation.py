"""How results look, in one place: metric cells, Markdown and terminal tables, CED figures.

Every table cell of a metric, every results table and every cumulative error distribution (CED) figure the
package writes comes from here: one run's results (`pipnet_lit.run_results`), the callbacks' CED plots,
run comparisons (`pipnet_lit.compare`), seed aggregates and pseudo-label diagnostics (`pipnet_lit.ssl`).

Conventions: NMEs, failure rates and hit rates are fractions in files and percent with 2 decimals in cells
(``0.0312`` -> ``3.12``); AUCs and rank correlations stay as they are, with 4 decimals; a missing value is
``-``. No Lightning; rich and matplotlib (Agg canvas, no pyplot state) are imported when first used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipnet_lit.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = [
    "COMPARE_CED",
    "RUN_CED",
    "CEDCurve",
    "CEDStyle",
    "ced_curve_of",
    "ced_legend",
    "correlation_cell",
    "format_metric",
    "is_percent",
    "markdown_table",
    "metric_header",
    "metrics_table",
    "new_figure",
    "percent_cell",
    "plot_ced",
    "save_figure",
]


# -- cells ------------------------------------------------------------------------------------------------
def is_percent(metric: str) -> bool:
    """NMEs, failure rates and hit rates are shown in %; AUCs and rank correlations as they are."""
    return not metric.removeprefix("pl_").startswith(("auc", "spearman"))


def metric_header(metric: str) -> str:
    """A metric's column header: ``nme_io (%)``, ``auc@0.10``."""
    return f"{metric} (%)" if is_percent(metric) else metric


def percent_cell(value: float | None) -> str:
    """A fraction in percent: ``0.1234`` -> ``12.34``; None -> ``-``."""
    return "-" if value is None else f"{100 * value:.2f}"


def format_metric(key: str, value: float | None) -> str:
    """One table cell: ``12.00`` (% for NME / FR / hit rates), ``0.6123`` (AUC, correlations), ``-``."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return percent_cell(value) if is_percent(key) else f"{value:.4f}"


def correlation_cell(value: float | None) -> str:
    """A rank correlation with its sign: ``+0.812``; None (undefined) -> ``-``."""
    return "-" if value is None else f"{value:+.3f}"


# -- tables ----------------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table (``|`` inside a cell escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(results: dict[str, dict[str, float]], title: str = "Test results") -> Table:
    """A rich table with one row per subset; NME and FR in percent, AUC as a fraction (as papers report)."""
    from rich.table import Table

    table = Table(title=title)
    keys: list[str] = []
    for values in results.values():
        keys += [k for k in values if k not in keys]
    table.add_column("subset")
    for key in keys:
        table.add_column(metric_header(key), justify="right")
    for subset, values in results.items():
        table.add_row(subset, *(format_metric(key, values.get(key)) for key in keys))
    return table


# -- figures ---------------------------------------------------------------------------------------------
def new_figure(width: float, height: float, dpi: float = 100) -> Figure:
    """A matplotlib figure on an Agg canvas of its own: headless, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(
    fig: Figure, path: str | os.PathLike[str], dpi: float | None = None, bbox_inches: str | None = None
) -> Path:
    """Write ``fig`` (PNG by the suffix) at ``dpi`` (default: the figure's), creating the folder."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(
        path,
        lambda tmp: fig.savefig(
            tmp, format=fmt, dpi=fig.dpi if dpi is None else dpi, bbox_inches=bbox_inches
        ),
    )


@dataclass(frozen=True)
class CEDCurve:
    """One line of a CED figure: its legend text and the curve (`pipnet_lit.metrics.functional.ced_curve`:
    ``xs`` NME thresholds as fractions, ``ys`` the fraction of images with NME <= x), drawn as
    (100 xs, ys)."""

    label: str
    xs: np.ndarray
    ys: np.ndarray


@dataclass(frozen=True)
class CEDStyle:
    """How a CED figure looks. ``legend``: the legend text with FR and AUC known, from ``{name}`` and
    ``{scores}`` (``AUC 0.6123, FR 2.00%``); ``colour`` None: matplotlib's colour cycle."""

    size: tuple[float, float] = (6.4, 4.8)
    dpi: float = 100
    colour: str | None = None
    legend_fontsize: str | None = None
    tight_layout: bool = False
    legend: str = "{name} ({scores})"


#: One run's CED per test subset (the `CEDPlot` callback): one blue line, ``nme_io: AUC ..., FR ...%``.
RUN_CED = CEDStyle(size=(5, 4), colour="#007aff", tight_layout=True, legend="{name}: {scores}")
#: Runs overlaid (`pipnet_lit.compare`): one line per run, ``<run> (AUC ..., FR ...%)``.
COMPARE_CED = CEDStyle(legend_fontsize="small")


def ced_legend(name: str, fr: float | None, auc: float | None, style: CEDStyle = COMPARE_CED) -> str:
    """The legend text of a curve: ``name`` with its AUC and FR (``style.legend``), or ``name`` alone when
    either is unknown."""
    if fr is None or auc is None:
        return name
    scores = f"AUC {format_metric('auc', float(auc))}, FR {format_metric('fr', float(fr))}%"
    return style.legend.format(name=name, scores=scores)


def ced_curve_of(
    name: str, nmes: Any, threshold: float = 0.1, step: float = 1e-4, style: CEDStyle = COMPARE_CED
) -> CEDCurve:
    """The CED of per-image NMEs (fractions) up to ``threshold``, labelled with its AUC and FR."""
    from pipnet_lit.metrics.functional import ced_curve, fr_auc

    xs, ys = ced_curve(nmes, threshold, step)
    fr, auc = fr_auc(nmes, threshold, step)
    return CEDCurve(ced_legend(name, fr, auc, style), xs.numpy(), ys.numpy())


def plot_ced(
    curves: Sequence[CEDCurve], *, title: str, xlabel: str, xmax: float, style: CEDStyle = COMPARE_CED
) -> Figure:
    """A CED figure: the fraction of images (y) with NME <= x, x in percent from 0 to ``100 * xmax``
    (``xmax``: the FR threshold as a fraction); one line per curve, exactly (100 * xs, ys)."""
    fig = new_figure(*style.size, dpi=style.dpi)
    ax = fig.add_subplot()
    line = {"linewidth": 1.5} if style.colour is None else {"linewidth": 1.5, "color": style.colour}
    for curve in curves:
        ax.plot(100 * np.asarray(curve.xs), np.asarray(curve.ys), label=curve.label, **line)
    ax.set(title=title, xlabel=xlabel, ylabel="fraction of images", xlim=(0, 100 * xmax), ylim=(0, 1.0))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=style.legend_fontsize)
    if style.tight_layout:
        fig.tight_layout()
    return fig
