"""Deprecated alias of `pipnet_lit.run_results` (one run's results) and `pipnet_lit.presentation` (cells and
tables), kept for one release: import from those modules instead."""

from pipnet_lit.presentation import format_metric, is_percent, markdown_table, metrics_table
from pipnet_lit.run_results import (
    METRICS_NAME,
    PER_IMAGE_NAME,
    PerImage,
    print_metrics,
    read_per_image_results,
    report,
    results_from_metrics,
    tested_results,
    write_metrics,
    write_per_image_results,
)

__all__ = [
    "METRICS_NAME",
    "PER_IMAGE_NAME",
    "PerImage",
    "format_metric",
    "is_percent",
    "markdown_table",
    "metrics_table",
    "print_metrics",
    "read_per_image_results",
    "report",
    "results_from_metrics",
    "tested_results",
    "write_metrics",
    "write_per_image_results",
]
