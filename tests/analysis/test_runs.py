"""mmbert.analysis: discovering runs and checkpoints, training logs, mixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmbert.analysis import (
    added_languages,
    collect_metrics,
    find_checkpoints,
    find_runs,
    metric_table,
    mixture_shares,
    parent_of,
    phase_of,
    phase_starts,
    read_metrics,
    read_mixture,
    share_matrix,
)


def _hf(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def _run(folder: Path, *, hf: bool = True) -> Path:
    (folder / "csv").mkdir(parents=True, exist_ok=True)
    if hf:
        _hf(folder / "hf")
    return folder


def _csv(run_dir: Path, rows: list[dict], name: str = "csv/metrics.csv") -> None:
    path = run_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def test_discovery_orders_recipe_and_names_by_relative_path(tmp_path):
    for name in ("decay-all", "midtrain", "decay-cont", "pretrain", "decay-eng", "decay-zzz"):
        _run(tmp_path / name)
    _hf(tmp_path / "merges" / "ema")
    _hf(tmp_path / "merges" / "ties")
    _hf(tmp_path / "merges" / "avg")
    # Lightning checkpoints and logger folders are never searched for HF folders.
    _hf(tmp_path / "pretrain" / "checkpoints" / "inner")
    (tmp_path / "notes").mkdir()

    expected_runs = ["pretrain", "midtrain", "decay-eng", "decay-cont", "decay-all", "decay-zzz"]
    assert list(find_runs(tmp_path)) == expected_runs
    checkpoints = find_checkpoints(tmp_path)
    assert list(checkpoints) == [*expected_runs, "merges/ties", "merges/ema", "merges/avg"]
    assert checkpoints["decay-all"] == tmp_path / "decay-all" / "hf"
    assert checkpoints["merges/ties"] == tmp_path / "merges" / "ties"


def test_discovery_of_a_single_run_root(tmp_path):
    run = _run(tmp_path / "my-run")
    assert find_runs(run) == {"my-run": run}
    assert find_checkpoints(run) == {"my-run": run / "hf"}
    with pytest.raises(FileNotFoundError):
        find_runs(tmp_path / "missing")


def test_phases_and_lineage():
    assert [phase_of(n) for n in ("pretrain", "midtrain", "decay-all", "merges/ties", "x")] == [
        "pretrain",
        "midtrain",
        "decay",
        "merges",
        "other",
    ]
    assert [parent_of(n) for n in ("pretrain", "midtrain", "decay-eng", "merges/ema")] == [
        None,
        "pretrain",
        "midtrain",
        None,
    ]


def test_read_metrics_is_tidy_and_keeps_the_resumed_value(tmp_path):
    _csv(
        tmp_path,
        [
            {"step": 0, "epoch": 0, "train/loss": 5.0, "train/tokens": 10.0},
            {"step": 1, "epoch": 0, "train/loss": 4.0, "train/tokens": 20.0},
            {"step": 1, "val/loss": 4.5},
        ],
        "csv/version_0/metrics.csv",
    )
    _csv(tmp_path, [{"step": 1, "train/loss": 3.5, "train/tokens": 20.0}], "csv/version_1/metrics.csv")
    long = read_metrics(tmp_path)
    assert list(long.columns) == ["step", "metric", "value"]
    assert not long.isna().any().any()
    assert "epoch" not in set(long["metric"])
    assert len(long) == 5
    loss = long[long["metric"] == "train/loss"].set_index("step")["value"]
    assert loss.to_dict() == {0: 5.0, 1: 3.5}


def test_collect_metrics_puts_phases_on_one_token_axis(tmp_path):
    _csv(
        tmp_path / "pretrain",
        [{"step": s, "train/tokens": 10.0 * (s + 1), "train/loss": 9 - s} for s in range(10)],
    )
    # val/loss at step 4 was logged without train/tokens: its tokens are interpolated (steps 3 and 5 had 60, 100).
    midtrain = [{"step": s, "train/tokens": 20.0 * s} for s in (1, 3, 5)] + [{"step": 4, "val/loss": 2.0}]
    _csv(tmp_path / "midtrain", midtrain)
    _csv(tmp_path / "decay-all", [{"step": s, "train/tokens": 5.0 * (s + 1)} for s in range(3)])
    metrics = collect_metrics(tmp_path)

    assert list(metrics["run"].unique()) == ["pretrain", "midtrain", "decay-all"]
    val = metrics[metrics["metric"] == "val/loss"].iloc[0]
    assert val["tokens"] == pytest.approx(80.0)
    assert val["cum_tokens"] == pytest.approx(100.0 + 80.0)
    decay = metrics[(metrics["run"] == "decay-all") & (metrics["metric"] == "train/tokens")]
    np.testing.assert_allclose(decay["cum_tokens"], [200.0 + 5, 200.0 + 10, 200.0 + 15])
    assert phase_starts(metrics) == {"midtrain": 100.0, "decay": 200.0}
    assert set(metrics.loc[metrics["run"] == "decay-all", "phase"]) == {"decay"}


def test_collect_metrics_does_not_shift_a_run_that_carried_the_token_count(tmp_path):
    _csv(tmp_path / "pretrain", [{"step": s, "train/tokens": 50.0 * (s + 1)} for s in range(2)])
    _csv(tmp_path / "midtrain", [{"step": s, "train/tokens": 100.0 + 50.0 * (s + 1)} for s in range(2)])
    metrics = collect_metrics(tmp_path)
    mid = metrics[metrics["run"] == "midtrain"]
    np.testing.assert_allclose(mid["cum_tokens"], mid["tokens"])
    assert phase_starts(metrics) == {}


def test_metric_table_orders_runs_by_recipe(tmp_path):
    for run in ("decay-all", "pretrain"):
        _csv(tmp_path / run, [{"step": s, "train/tokens": 1.0 + s, "train/loss": 1.0} for s in (1, 0)])
    table = metric_table(collect_metrics(tmp_path), "train/loss")
    assert list(zip(table["run"], table["step"], strict=True)) == [
        ("pretrain", 0),
        ("pretrain", 1),
        ("decay-all", 0),
        ("decay-all", 1),
    ]


def _mixture(run_dir: Path, tau: float, tokens: dict[str, int], realised: dict[str, int]) -> None:
    powered = {k: v**tau for k, v in tokens.items()}
    languages = {
        k: {
            "tokens": tokens[k],
            "weight": powered[k] / sum(powered.values()),
            "realised_tokens": realised.get(k, 0),
        }
        for k in tokens
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "mixture.json").write_text(json.dumps({"tau": tau, "languages": languages}))


def test_mixture_shares(tmp_path):
    _mixture(tmp_path / "midtrain", 0.5, {"eng_Latn": 900, "fra_Latn": 100}, {"eng_Latn": 75, "fra_Latn": 25})
    _mixture(tmp_path / "decay-all", 0.3, {"eng_Latn": 900, "fra_Latn": 100, "fao_Latn": 1}, {})
    shares = mixture_shares(tmp_path)

    assert list(shares["run"].unique()) == ["midtrain", "decay-all"]
    sums = shares.groupby("run")[["natural", "target"]].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    mid = shares[shares["run"] == "midtrain"].set_index("language")
    assert mid.loc["eng_Latn", "natural"] == pytest.approx(0.9)
    # tau = 0.5: 30 / (30 + 10)
    assert mid.loc["eng_Latn", "target"] == pytest.approx(0.75)
    assert mid.loc["fra_Latn", "realised"] == pytest.approx(0.25)
    assert shares.loc[shares["run"] == "decay-all", "realised"].isna().all()
    # A lower temperature lifts the smallest language above its natural share.
    fao = shares[(shares["run"] == "decay-all") & (shares["language"] == "fao_Latn")].iloc[0]
    assert fao["target"] > 10 * fao["natural"]

    assert added_languages(shares, "decay-all", "midtrain") == ["fao_Latn"]
    with pytest.raises(KeyError):
        added_languages(shares, "decay-eng", "midtrain")
    table = share_matrix(shares)
    assert list(table.columns) == ["midtrain", "decay-all"]
    assert table.index[0] == "eng_Latn"
    assert np.isnan(table.loc["fao_Latn", "midtrain"])


def test_read_mixture_rejects_incomplete_reports(tmp_path):
    (tmp_path / "mixture.json").write_text(json.dumps({"tau": 0.5, "languages": {"eng_Latn": {"tokens": 3}}}))
    with pytest.raises(ValueError, match="weight"):
        read_mixture(tmp_path)
