"""Training logs: Lightning CSVLogger ``metrics.csv`` files as one tidy table on a cumulative-token axis.

CSVLogger rows are sparse (a row holds only what was logged at that step), so the table is long: one row per
(run, step, metric). Every row gets the run's ``train/tokens`` at that step (interpolated between logged
steps) and ``cum_tokens``, the tokens seen since the start of pre-training along the run's lineage
(pretrain -> midtrain -> decay variant), so that all phases share one x axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mmbert.analysis.discovery import find_runs, order_key, parent_of, phase_of

TOKENS = "train/tokens"
_NOT_METRICS = ("step", "epoch")


def metrics_files(run_dir: str | Path) -> list[Path]:
    """The run's metrics.csv files: ``csv/metrics.csv``, or one per logger version (resumed runs)."""
    return sorted(Path(run_dir, "csv").rglob("metrics.csv"))


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """Columns ``step``, ``metric``, ``value`` (no missing values); empty if the run logged nothing."""
    frames = []
    for path in metrics_files(run_dir):
        wide = pd.read_csv(path)
        if "step" not in wide.columns:
            raise ValueError(f"{path}: no 'step' column; is this a Lightning CSVLogger metrics.csv?")
        value_cols = [c for c in wide.columns if c not in _NOT_METRICS]
        frames.append(wide.melt(id_vars="step", value_vars=value_cols, var_name="metric").dropna())
    if not frames:
        return pd.DataFrame({"step": pd.Series(dtype=int), "metric": [], "value": pd.Series(dtype=float)})
    long = pd.concat(frames, ignore_index=True)
    # A resumed run logs some steps twice; the later log is the one that continued.
    long = long.drop_duplicates(["step", "metric"], keep="last")
    long["step"] = long["step"].astype(int)
    long["value"] = long["value"].astype(float)
    return long.sort_values(["step", "metric"], ignore_index=True)


def _tokens_at(long: pd.DataFrame) -> pd.Series:
    """Tokens seen at each row's step, interpolated from the logged ``train/tokens``; NaN if never logged."""
    logged = long[long["metric"] == TOKENS].sort_values("step")
    if logged.empty:
        return pd.Series(np.nan, index=long.index)
    return pd.Series(np.interp(long["step"], logged["step"], logged["value"]), index=long.index)


def collect_metrics(runs: str | Path | Mapping[str, Path]) -> pd.DataFrame:
    """Metrics of every run (a recipe root, or ``{name: run folder}``) with columns ``run``, ``phase``,
    ``step``, ``metric``, ``value``, ``tokens`` and ``cum_tokens``, in recipe order."""
    if not isinstance(runs, Mapping):
        runs = find_runs(runs)
    per_run: dict[str, pd.DataFrame] = {}
    for name in sorted(runs, key=order_key):
        long = read_metrics(runs[name])
        long["tokens"] = _tokens_at(long)
        per_run[name] = long

    offsets: dict[str, float] = {}
    for name, long in per_run.items():
        offsets[name] = _offset(name, per_run, offsets)
        long["cum_tokens"] = long["tokens"] + offsets[name]
        long.insert(0, "phase", phase_of(name))
        long.insert(0, "run", name)
    columns = ["run", "phase", "step", "metric", "value", "tokens", "cum_tokens"]
    if not per_run:
        return pd.DataFrame(columns=columns)
    return pd.concat(per_run.values(), ignore_index=True)[columns]


def _offset(name: str, per_run: Mapping[str, pd.DataFrame], offsets: Mapping[str, float]) -> float:
    parent = parent_of(name)
    if parent not in per_run:  # runs come in recipe order: a present parent already has its offset
        return 0.0
    parent_tokens = per_run[parent]["tokens"]
    own_tokens = per_run[name]["tokens"]
    if parent_tokens.isna().all() or own_tokens.isna().all():
        return offsets[parent]
    parent_end = float(parent_tokens.max())
    # A phase normally restarts its token count (its schedules start at 0); a run resumed with the parent's
    # count already starts past the parent's end and needs no shift.
    restarted = float(own_tokens.min()) < parent_end
    return offsets[parent] + (parent_end if restarted else 0.0)


def phase_starts(metrics: pd.DataFrame) -> dict[str, float]:
    """``{phase: cum_tokens where it starts}`` for the phases after pre-training (the boundaries to mark)."""
    starts: dict[str, float] = {}
    for phase, rows in metrics.groupby("phase", sort=False):
        first = float((rows["cum_tokens"] - rows["tokens"]).min())
        if phase != "pretrain" and np.isfinite(first) and first > 0:
            starts[str(phase)] = first
    return starts


def metric_table(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric, sorted by run (recipe order) and step."""
    rows = metrics[metrics["metric"] == metric]
    rank = {run: i for i, run in enumerate(sorted(rows["run"].unique(), key=order_key))}
    return rows.sort_values(
        ["run", "step"], key=lambda col: col.map(rank) if col.name == "run" else col
    ).reset_index(drop=True)
