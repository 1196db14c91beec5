"""Language mixtures: the target (temperature-sampled) weights of each phase against the tokens realised.

``mixture.json`` (written by every training run, schema of :func:`mmbert.data.mix.report.mixture_report`):
``{"tau": float, "counts": "available" | "released", "languages": {lang: {"tokens": n_i, "weight": q_i,
"realised_tokens": int, ...}}}``. With ``counts: available`` (folders, the sample) ``n_i`` are the language's
available tokens and ``q_i = n_i^tau / sum_j n_j^tau``; with ``counts: released`` (the released mmBERT
mixtures) ``n_i`` are the release's own tokens, already sampled, and ``q_i`` their shares (re-tempered only
when the phase's tau differs from the release's). The ``natural`` share below is ``n_i / sum n_j`` either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mmbert.analysis.discovery import find_runs, order_key

MIXTURE_FILE = "mixture.json"


def read_mixture(run_dir: str | Path) -> dict[str, Any]:
    """The parsed ``mixture.json`` of a run; ValueError naming what is missing."""
    path = Path(run_dir) / MIXTURE_FILE
    report = json.loads(path.read_text())
    if not isinstance(report.get("languages"), dict) or not report["languages"]:
        raise ValueError(f"{path}: no 'languages' mapping")
    for lang, entry in report["languages"].items():
        missing = [k for k in ("tokens", "weight") if k not in entry]
        if missing:
            raise ValueError(f"{path}: language {lang!r} lacks {missing}")
    return report


def mixture_shares(runs: str | Path | Mapping[str, Path]) -> pd.DataFrame:
    """One row per (run, language): ``tau``, available ``tokens``, ``realised_tokens`` and three shares that
    each sum to 1 over a run's languages: ``natural`` (tokens, i.e. tau = 1), ``target`` (the sampling
    weight) and ``realised`` (share of the tokens actually trained on; NaN before any were)."""
    if not isinstance(runs, Mapping):
        runs = find_runs(runs)
    rows = []
    for name in sorted(runs, key=order_key):
        if not (Path(runs[name]) / MIXTURE_FILE).is_file():
            continue
        report = read_mixture(runs[name])
        for lang, entry in report["languages"].items():
            rows.append(
                {
                    "run": name,
                    "language": lang,
                    "tau": report.get("tau"),
                    "tokens": float(entry["tokens"]),
                    "weight": float(entry["weight"]),
                    "realised_tokens": float(entry.get("realised_tokens", 0)),
                }
            )
    columns = ["run", "language", "tau", "tokens", "realised_tokens", "natural", "target", "realised"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    by_run = df.groupby("run", sort=False)
    df["natural"] = df["tokens"] / by_run["tokens"].transform("sum")
    # Normalised again because a report may list weights rounded, or of a subset of a larger mix.
    df["target"] = df["weight"] / by_run["weight"].transform("sum")
    realised_total = by_run["realised_tokens"].transform("sum")
    df["realised"] = df["realised_tokens"] / realised_total.where(realised_total > 0)
    return df[columns]


def share_matrix(shares: pd.DataFrame, value: str = "target") -> pd.DataFrame:
    """Language x run table of one share column (NaN where a run does not train a language), languages
    ordered by their largest share."""
    table = shares.pivot(index="language", columns="run", values=value)
    table = table[sorted(table.columns, key=order_key)]
    return table.loc[table.max(axis=1).sort_values(ascending=False).index]


def added_languages(shares: pd.DataFrame, run: str, reference: str) -> list[str]:
    """Languages that ``run`` trains on and ``reference`` does not (e.g. decay-all vs midtrain), sorted."""
    langs = {r: set(shares.loc[shares["run"] == r, "language"]) for r in (run, reference)}
    for r, found in langs.items():
        if not found:
            raise KeyError(f"no mixture for run {r!r}; runs: {sorted(shares['run'].unique())}")
    return sorted(langs[run] - langs[reference])
