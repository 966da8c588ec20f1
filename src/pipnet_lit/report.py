"""Deprecated alias of `pipnet_lit.compare` (compare finished runs), kept for one release:
``python -m pipnet_lit.report ...`` runs ``python -m pipnet_lit.compare ...``; import from
`pipnet_lit.compare` instead."""

import sys

from pipnet_lit.compare import (
    COMMAND,
    METRICS_FILE,
    PER_IMAGE_FILE,
    REPORT_FILE,
    CompareOptions,
    Report,
    ReportError,
    Run,
    ced_filename,
    collect_runs,
    find_run_dirs,
    load_run,
    main,
    make_report,
    metric_order,
    plot_ced,
    read_metrics,
    read_per_image,
    results_table,
    run_labels,
    runs_table,
    subset_order,
    write_ced_figures,
)

__all__ = [
    "COMMAND",
    "METRICS_FILE",
    "PER_IMAGE_FILE",
    "REPORT_FILE",
    "CompareOptions",
    "Report",
    "ReportError",
    "Run",
    "ced_filename",
    "collect_runs",
    "find_run_dirs",
    "load_run",
    "main",
    "make_report",
    "metric_order",
    "plot_ced",
    "read_metrics",
    "read_per_image",
    "results_table",
    "run_labels",
    "runs_table",
    "subset_order",
    "write_ced_figures",
]

if __name__ == "__main__":
    sys.exit(main())
