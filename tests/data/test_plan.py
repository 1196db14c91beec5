"""`mmbert-plan`: the mixture plan of a train config, offline."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import REPO

import mmbert.data.counts as counts_module
import mmbert.data.mix.folder as folder_module
import mmbert.data.mix.mds as mds_module
from mmbert.cli.plan import compose_train, main, plan_of
from mmbert.data import FolderMix, SampleMix
from mmbert.data.counts import CACHE_NAME, estimate_tokens, measure_tokens
from mmbert.data.tokenizer import load_tokenizer

ENTRY_KEYS = {"weight", "tokens", "budget_tokens", "passes"}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan must neither load a tokenizer nor measure (read) data."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the plan loaded a tokenizer or read data")

    for backend in (folder_module, mds_module):
        monkeypatch.setattr(backend, "load_tokenizer", refuse)
        monkeypatch.setattr(backend, "measure_tokens", refuse)
    monkeypatch.setattr(folder_module, "estimate_tokens", refuse)
    monkeypatch.setattr(counts_module, "measure_tokens", refuse)


def test_decay_all_plan_gives_the_release_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture, offline: None
) -> None:
    start = time.perf_counter()
    out = tmp_path / "plan" / "mixture.json"
    assert main(["phase=decay", "data_mix=decay-all", "model=base", "top=8", f"out={out}"]) == 0
    assert time.perf_counter() - start < 20  # seconds, not a data scan
    printed = capsys.readouterr().out.splitlines()
    assert printed[2].split()[1] == "eng" and printed[3].split()[1] == "code"
    assert len(printed) == 2 + 8 + 1 and printed[-1].startswith(
        "1834 languages (1826 not shown), 100B tokens"
    )
    report = json.loads(out.read_text())
    assert (report["tau"], report["counts"], report["released_tau"]) == (0.3, "released", 0.3)
    langs = report["languages"]
    assert len(langs) == 1834 and all(set(e) == ENTRY_KEYS for e in langs.values())
    assert 100 * langs["eng"]["weight"] == pytest.approx(10.2, abs=0.06)
    assert 100 * langs["code"]["weight"] == pytest.approx(5.5, abs=0.06)
    assert langs["eng"]["budget_tokens"] == round(langs["eng"]["weight"] * 1e11)
    assert all(e["passes"] is None for e in langs.values())  # the release's counts are not data sizes
    assert sum(e["weight"] for e in langs.values()) == pytest.approx(1.0)


def test_sample_plan_gives_passes_and_flags(capsys: pytest.CaptureFixture, offline: None) -> None:
    _, report = plan_of(compose_train(["data_mix=sample", "phase=midtrain"]))
    sample = SampleMix(subset="midtrain")
    available = sample.meaning.data_tokens(sample.known_counts())
    langs = report["languages"]
    assert len(langs) == 16 and report["counts"] == "available"
    for lang, e in langs.items():
        assert e["passes"] == pytest.approx(e["budget_tokens"] / available[lang])
    assert main(["data_mix=sample", "phase=midtrain", "max_passes=4"]) == 0
    printed = capsys.readouterr().out.splitlines()
    flagged = sum(e["passes"] > 4 for e in langs.values())
    assert printed[-1].endswith(f"{flagged} above max_passes=4")
    assert sum(line.endswith(" !") for line in printed) == flagged
    assert 0 < flagged < len(langs)


def test_tau_override_retempers_a_released_mix(offline: None) -> None:
    _, release = plan_of(compose_train(["data_mix=pretrain", "model=base"]))
    _, ablation = plan_of(compose_train(["data_mix=pretrain", "model=base", "phase.tau=0.5"]))
    assert ablation["tau"] == 0.5 and ablation["released_tau"] == 0.7
    before, after = release["languages"], ablation["languages"]
    assert after["eng"]["weight"] == before["eng"]["weight"]
    assert after["code"]["weight"] == before["code"]["weight"]
    assert after["rus"]["weight"] < before["rus"]["weight"]  # flatter: the largest FineWeb2 language loses
    assert release["languages"]["eng"]["budget_tokens"] == round(before["eng"]["weight"] * 2.3e12)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["foo=1"], "'foo'"),
        (["data_mix=nope"], "data_mix/nope"),
        (["phase.tau=[1"], "phase.tau=[1"),
        (["phase.tau=1.5"], "phase.tau"),
        (["top=x"], "top"),
        (["count=guess"], "count"),
        (["data_mix=pretrain", "data_mix.counts=shares"], "counts"),
    ],
)
def test_bad_overrides_fail_with_one_line_naming_them(
    args: list[str], named: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("plan: ") and named in err


def test_unmeasured_folder_is_refused_not_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture, offline: None
) -> None:
    shutil.copytree(REPO / "data" / "sample" / "fao_Latn", tmp_path / "fao_Latn")
    with pytest.raises(SystemExit) as exit_:
        main(["data_mix=folder", f"data_mix.path={tmp_path}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "data_mix.token_counts" in err and "count=estimate" in err and "count=exact" in err
    assert not (tmp_path / CACHE_NAME).exists()
    assert (
        main(["data_mix=folder", f"data_mix.path={tmp_path}", "data_mix.token_counts={fao_Latn: 1000}"]) == 0
    )


def folder_of(tmp_path: Path) -> Path:
    """A new folder: English (530 KiB, estimated from 32 KiB) and Faroese (within 32 KiB: counted)."""
    for lang in ("eng_Latn", "fao_Latn"):
        shutil.copytree(REPO / "data" / "sample" / lang, tmp_path / lang)
    return tmp_path


def plan_counts(folder: Path, count: str, capsys: pytest.CaptureFixture) -> tuple[dict[str, int], str]:
    """The plan's data tokens per language with ``count=``, and what it printed to stderr."""
    out = folder / f"plan-{count}.json"
    args = ["data_mix=folder", f"data_mix.path={folder}", "data_mix.sample_bytes=32768", f"out={out}"]
    assert main([*args, f"count={count}"]) == 0
    langs = json.loads(out.read_text())["languages"]
    return {
        lang: round(e["budget_tokens"] / e["passes"]) for lang, e in langs.items()
    }, capsys.readouterr().err


@pytest.mark.parametrize("count", ["estimate", "exact"])
def test_count_measures_a_new_folder_and_caches_it_for_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, count: str
) -> None:
    folder = folder_of(tmp_path)
    planned, err = plan_counts(folder, count, capsys)
    assert f"counting tokens ({count})" in err  # the training run's progress bar
    tok = load_tokenizer("data/tokenizer")
    src = FolderMix(str(folder)).train_source("eng_Latn")
    if count == "exact":
        expected = measure_tokens(src, tok)[0]
    else:
        expected = estimate_tokens(src, tok, 32768)[0]
        assert expected != measure_tokens(src, tok)[0]  # really estimated
    assert planned["eng_Latn"] == pytest.approx(expected, abs=1)
    assert planned["fao_Latn"] == pytest.approx(
        measure_tokens(FolderMix(str(folder)).train_source("fao_Latn"), tok)[0], abs=1
    )
    cache = json.loads((folder / CACHE_NAME).read_text())
    (entries,) = cache.values()
    assert entries["eng_Latn"].get("estimated", False) == (count == "estimate")
    assert "estimated" not in entries["fao_Latn"]
    # the cache is the one a training run reads: the mix knows the counts now, and the plan is offline again
    mix = FolderMix(str(folder), sample_bytes=32768)
    assert mix.known_counts() == {
        "eng_Latn": entries["eng_Latn"]["tokens"],
        "fao_Latn": entries["fao_Latn"]["tokens"],
    }
    assert main(["data_mix=folder", f"data_mix.path={folder}"]) == 0


def test_count_exact_recounts_what_was_only_estimated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = folder_of(tmp_path)
    estimated, _ = plan_counts(folder, "estimate", capsys)
    exact, err = plan_counts(folder, "exact", capsys)
    assert "counting tokens (exact)" in err
    assert exact["eng_Latn"] != estimated["eng_Latn"] and exact["fao_Latn"] == estimated["fao_Latn"]
    again, err = plan_counts(folder, "estimate", capsys)  # an exact count serves an estimate request
    assert again == exact and "counting tokens" not in err
