"""A CSV logger that keeps what a killed run already wrote when the run is resumed.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when its run folder is reused, so resuming a run
with `ckpt_path=last` would lose the first part of its history. `ResumableCSVLogger` appends instead
(`train` refuses to start a fresh run in a folder that already holds one, so only resumes append).
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep an existing metrics file and continue its header (new keys still rewrite it, keeping rows).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)
            if header != self.metrics_keys:  # keep the file's rows aligned with our sorted header
                self._rewrite_with_new_header(self.metrics_keys)


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` whose `metrics.csv` survives a resumed run (rows are appended, never deleted)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
