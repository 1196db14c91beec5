"""results.json of one evaluation and the CSV table over a multirun (a Hydra callback)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
TABLE_FILE = "results.csv"

log = logging.getLogger(__name__)


def write_results(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/results.json`` through a temporary file, so an interruption never leaves half a file."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    tmp.replace(folder / RESULTS_FILE)
    return folder / RESULTS_FILE


def table_rows(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, language): the overall metrics under language ``all``, then each language's."""
    rows = []
    for r in results:
        base = {
            "task": r["task"],
            "type": r.get("type"),
            "model": r["model"],
            "seed": r.get("seed"),
            "protocol": r.get("protocol"),
        }
        metrics = dict(r["metrics"])
        per_language = metrics.pop("per_language", {})
        rows.append({**base, "language": "all", **metrics})
        rows += [{**base, "language": lang, **m} for lang, m in per_language.items()]
    return rows


def read_results(folder: str | Path) -> list[dict[str, Any]]:
    """Every results.json under ``folder`` (a multirun's sweep dir), in path order."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).rglob(RESULTS_FILE))]


def write_table(folder: str | Path, out: str | Path | None = None) -> Path:
    """``folder/results.csv`` (or ``out``) over every results.json under ``folder``."""
    rows = table_rows(read_results(folder))
    path = Path(out) if out is not None else Path(folder) / TABLE_FILE
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keeps the module importable without it
    Callback = object  # type: ignore[assignment,misc]


class ResultsTable(Callback):  # type: ignore[misc,valid-type]
    """After a multirun, ``SWEEP_DIR/results.csv`` over the jobs' results.json files."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.rglob(RESULTS_FILE)):
            log.warning("no %s under %s: no table written", RESULTS_FILE, sweep_dir)
            return
        log.info("results table: %s", write_table(sweep_dir))
