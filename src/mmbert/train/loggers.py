"""A CSV logger that survives resumption into the same run folder.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when a run starts, so resuming with ``ckpt_path=``
into the same ``hydra.run.dir`` would lose the curve logged before the interruption. This one keeps the
earlier rows up to the step the resumed run starts from and drops the rest (they are logged again).
"""

from __future__ import annotations

import csv
import logging

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


class _KeepEarlierRows(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Read, do not delete: the file is rewritten at the first save, so a crash before it loses nothing.
        self._earlier: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self._earlier = list(csv.DictReader(file))

    def save(self) -> None:
        if self._earlier is not None and self.metrics:
            first_new = min(int(m["step"]) for m in self.metrics)
            kept = [
                {k: v for k, v in row.items() if v != ""}
                for row in self._earlier
                if row.get("step") not in (None, "") and int(row["step"]) < first_new
            ]
            log.info("metrics.csv: kept %d rows logged before step %d", len(kept), first_new)
            self.metrics = kept + self.metrics
            self._earlier = None
            self._fs.rm_file(self.metrics_file_path)
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` keeps the rows of earlier attempts of the same run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepEarlierRows(log_dir=self.log_dir)
        return self._experiment
