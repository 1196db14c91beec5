"""data_mix.add: your own languages in any mix at a chosen share. Exact target shares, realised shares after
100k tokens on real text (a FineWeb2-layout folder, a folder of files, prepare's MDS shards), replacing a
language the mix has, validation of the added language, the offline plan and mixture.json, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import REPO, compose_train

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import MLMDataModule
from mmbert.data.mix.added import AddedMix
from mmbert.data.mix.build import instantiate_mix
from mmbert.data.mix.count_meaning import CountMeaning
from mmbert.data.plan import format_plan, plan
from mmbert.data.prepare import PrepareConfig, prepare
from mmbert.data.sampling import temperature_weights
from mmbert.errors import DataError

SAMPLE = REPO / "data" / "sample"


def test_added_shares_are_exact_and_the_rest_keeps_its_proportions() -> None:
    counts = {"a": 100, "b": 400, "x": 50, "y": 7}
    meaning = CountMeaning(added={"x": 0.1, "y": 0.25})
    w = meaning.weights(counts, 0.5)
    own = temperature_weights({"a": 100, "b": 400}, 0.5)
    assert w == pytest.approx({"a": own["a"] * 0.65, "b": own["b"] * 0.65, "x": 0.1, "y": 0.25}, rel=1e-12)
    assert list(w) == list(counts)
    released = CountMeaning("released", fixed_shares=("b",), added={"x": 0.5})
    assert released.weights({"a": 3, "b": 1, "x": 1}, 0.3) == pytest.approx(
        {"a": 0.375, "b": 0.125, "x": 0.5}
    )


@pytest.fixture(scope="module")
def tigrinya(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tigrinya (not in the sample's pretrain subset) as each kind of path data_mix.add takes."""
    root = tmp_path_factory.mktemp("added")
    folder = shutil.copytree(SAMPLE / "tir_Ethi", root / "tir_Ethi")
    files = shutil.copytree(SAMPLE / "tir_Ethi" / "train", root / "tigrinya-files")
    prepare(
        PrepareConfig(
            source=str(files), out=str(root / "mds"), tokenizer="data/tokenizer", workers=1, name="tir_Ethi"
        )
    )
    return {"folder": folder, "files": files, "mds": root / "mds" / "tir_Ethi"}


def _datamodule(overrides: list[str]) -> MLMDataModule:
    cfg = compose_train(overrides)
    return MLMDataModule(
        instantiate_mix(cfg.data.mix),
        seq_len=128,
        rows_per_device=8,
        tau=0.3,
        mask_ratio=0.3,
        val_docs_per_lang=2,
    )


def _realised_after(dm: MLMDataModule, tokens: int) -> dict[str, float]:
    batches = dm.train_batches()
    while sum(dm.realised_tokens.values()) < tokens:
        next(batches)
    total = sum(dm.realised_tokens.values())
    return {lang: n / total for lang, n in dm.realised_tokens.items()}


@pytest.mark.parametrize("kind", ["folder", "files", "mds"])
def test_an_added_language_gets_its_share_within_three_points_after_100k_tokens(
    tigrinya: dict[str, Path], kind: str
) -> None:
    dm = _datamodule([f"+data_mix.add={{tir_Ethi: {{path: {tigrinya[kind]}, share: 0.15}}}}"])
    dm.setup("fit")
    assert dm.languages[-1] == "tir_Ethi" and dm.weights["tir_Ethi"] == 0.15
    realised = _realised_after(dm, 100_000)
    print(f"\n{kind}: tir_Ethi realised {realised['tir_Ethi']:.4f} of 100k tokens (target 0.15)")
    assert abs(realised["tir_Ethi"] - 0.15) <= 0.03
    # It validates: on its test split where it has one, else on held-out documents.
    assert "tir_Ethi" in dm.val_languages
    assert (dm.pipeline.sources[-1].holdout == 0) == (kind == "folder")


def test_an_added_language_the_mix_has_replaces_it(tigrinya: dict[str, Path]) -> None:
    dm = _datamodule(
        ["data_mix.subset=decay-all", f"+data_mix.add={{tir: {{path: {tigrinya['files']}, share: 0.3}}}}"]
    )
    assert dm.languages.count("tir_Ethi") == 0 and dm.languages[-1] == "tir"  # the hub-style ISO name
    dm.setup("fit")
    assert dm.pipeline.sources[-1].files() == [str(p) for p in sorted(tigrinya["files"].glob("*.jsonl*"))]
    assert dm.weights["tir"] == 0.3 and sum(dm.weights.values()) == pytest.approx(1.0)


def test_the_plan_and_mixture_json_show_the_added_language(tigrinya: dict[str, Path], tmp_path: Path) -> None:
    cfg = compose_train([f"+data_mix.add={{tir_Ethi: {{path: {tigrinya['folder']}, share: 0.05}}}}"])
    mix, report = plan(cfg.data.mix, 0.3, 1_000_000, count="estimate")
    assert isinstance(mix, AddedMix) and report["added"] == {"tir_Ethi": 0.05}
    entry = report["languages"]["tir_Ethi"]
    assert entry["weight"] == 0.05 and entry["budget_tokens"] == 50_000 and entry["passes"] > 0
    table = format_plan(report, "header", top=20, max_passes=4)
    assert "tir_Ethi" in table and "added at fixed shares (data_mix.add): tir_Ethi 5.00%" in table
    dm = _datamodule([f"+data_mix.add={{tir_Ethi: {{path: {tigrinya['folder']}, share: 0.05}}}}"])
    dm.write_mixture_json(tmp_path / "mixture.json")
    written = json.loads((tmp_path / "mixture.json").read_text())
    assert written["added"] == {"tir_Ethi": 0.05} and written["languages"]["tir_Ethi"]["weight"] == 0.05


@pytest.mark.parametrize(
    ("add", "message"),
    [
        (
            "{tir_Ethi: {path: FOLDER, share: 0}}",
            r"data_mix.add.tir_Ethi.share must be a number in \(0, 1\), got 0",
        ),
        ("{tir_Ethi: {path: FOLDER, share: 1.5}}", r"share must be a number in \(0, 1\), got 1.5"),
        ("{tir_Ethi: {path: FOLDER, share: lots}}", r"share must be a number in \(0, 1\), got 'lots'"),
        (
            "{tir_Ethi: {path: FOLDER, share: 0.6}, fao_Latn: {path: FOLDER, share: 0.5}}",
            "data_mix.add: the shares sum to 1.1 \\(must be < 1",
        ),
        ("{tir_Ethi: {path: EMPTY, share: 0.1}}", r"data_mix.add.tir_Ethi.path=.*: no usable text"),
        (
            "{tir_Ethi: {path: /no/such/dir, share: 0.1}}",
            r"data_mix.add.tir_Ethi.path=/no/such/dir: no such folder",
        ),
        ("{tigrinya: {path: FOLDER, share: 0.1}}", "'tigrinya' is not an ISO 639-3 language code"),
        ("{xq: {path: FOLDER, share: 0.1}}", "unknown 2-letter language code 'xq'"),
        (
            "{tir_Ethi: {path: FOLDER, share: 0.1, weight: 2}}",
            r"data_mix.add.tir_Ethi: unknown keys \['weight'\]",
        ),
        ("{tir_Ethi: {path: FOLDER}}", r"data_mix.add.tir_Ethi: give \{path: DIR, share: S\}"),
    ],
)
def test_bad_additions_are_one_line_before_training(
    tigrinya: dict[str, Path], tmp_path: Path, add: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    add = add.replace("FOLDER", str(tigrinya["folder"])).replace("EMPTY", str(tmp_path / "empty"))
    cfg = compose_train([f"+data_mix.add={add}"])
    with pytest.raises(DataError, match=message) as err:
        instantiate_mix(cfg.data.mix)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("base", ["folder", "mds"])
def test_every_kind_of_mix_takes_additions(tigrinya: dict[str, Path], tmp_path: Path, base: str) -> None:
    overrides = [f"data_mix={base}", f"+data_mix.add={{tir_Ethi: {{path: {tigrinya['mds']}, share: 0.25}}}}"]
    if base == "folder":
        for lang in ("deu_Latn", "rus_Cyrl", "jpn_Jpan"):
            shutil.copytree(SAMPLE / lang, tmp_path / lang)
        overrides.append(f"data_mix.path={tmp_path}")
    dm = _datamodule(overrides)
    dm.setup("fit")
    assert dm.weights["tir_Ethi"] == 0.25 and len(dm.languages) > 1
    assert abs(_realised_after(dm, 100_000)["tir_Ethi"] - 0.25) <= 0.03
