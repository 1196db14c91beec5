"""Bad settings and bad data fail early and clearly, naming the setting, key or file."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import FolderMix, HubMix, MLMDataModule, SampleMix
from mmbert.errors import DataError

GOOD = dict(seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3)


@pytest.fixture(scope="module")
def sample() -> SampleMix:
    return SampleMix(subset="pretrain")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"tau": 0.0}, "tau must be in"),
        ({"tau": 1.01}, "tau must be in"),
        ({"seq_len": 15}, "seq_len must be an integer >= 16"),
        ({"rows_per_device": 0}, "rows_per_device"),
        ({"mask_ratio": 0.0}, "mask_ratio must be in"),
        ({"val_mask_ratio": 1.0}, "val_mask_ratio must be in"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_datamodule_settings(sample: SampleMix, override: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        MLMDataModule(sample, **{**GOOD, **override})


def test_mix_must_be_a_mix_spec() -> None:
    with pytest.raises(DataError, match="mix must be a MixSpec"):
        MLMDataModule({"_target_": "mmbert.data.SampleMix"}, **GOOD)  # type: ignore[arg-type]


def test_bad_mix_settings(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data_mix\.subset must be one of"):
        SampleMix(subset="decay-everything")
    with pytest.raises(DataError, match=r"languages\.json"):
        SampleMix(path=str(tmp_path))
    with pytest.raises(DataError, match=r"data_mix\.path is not set"):
        FolderMix("???")
    with pytest.raises(DataError, match="unknown language 'zul_Latn'"):
        SampleMix(subset="pretrain", val_languages=["zul_Latn"])
    with pytest.raises(DataError, match="token count of 'eng' must be > 0"):
        HubMix(name="m", token_counts={"eng": 0})
    with pytest.raises(DataError, match="'English' is not an ISO 639-3 code"):
        HubMix(name="m", token_counts={"English": 5})
    with pytest.raises(DataError, match="sources given for languages not in the mix"):
        HubMix(name="m", token_counts={"eng": 5}, sources={"code": {"repo": "x/y"}})
    with pytest.raises(DataError, match="val_languages has 'fra'"):
        HubMix(name="m", token_counts={"eng": 5}, val_languages=["fra"])


def write_lang(root: Path, lang: str, records: list[dict], name: str = "000.jsonl") -> Path:
    folder = root / lang / "train"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def test_corrupt_file_fails_before_training_when_counting(tmp_path: Path) -> None:
    write_lang(tmp_path, "eng_Latn", [{"text": f"doc {i}"} for i in range(50)])
    bad = write_lang(tmp_path, "fao_Latn", [{"text": f"skjal {i} " * 50} for i in range(200)], "000.jsonl.gz")
    bad.write_bytes(bad.read_bytes()[:-40])
    dm = MLMDataModule(FolderMix(str(tmp_path)), **GOOD)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        dm.setup("fit")


def test_corrupt_file_in_a_worker_names_the_file(tmp_path: Path) -> None:
    write_lang(tmp_path, "eng_Latn", [{"text": f"doc {i}"} for i in range(50)])
    bad = write_lang(tmp_path, "fao_Latn", [{"text": f"skjal {i} " * 50} for i in range(200)], "000.jsonl.gz")
    bad.write_bytes(bad.read_bytes()[:-40])
    mix = FolderMix(str(tmp_path), token_counts={"eng_Latn": 100, "fao_Latn": 100})  # counts given: not read
    dm = MLMDataModule(mix, **GOOD, num_workers=1, val_docs_per_lang=0)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        for _ in zip(range(200), dm.train_batches(), strict=False):
            pass


def test_odd_text_trains_and_bad_records_are_skipped(tmp_path: Path) -> None:
    records = [
        {"text": "nul \u0000 char and zero-width\u200b joiner"},
        {"text": "combining e\u0301 and rtl \u202e text \U0001f600"},
        {"content": "no text"},
        {"text": ""},
        {"text": "lone surrogate follows"},
    ]
    path = write_lang(tmp_path, "eng_Latn", records * 20)
    path.write_text(path.read_text() + '{"text": "x\\udc80y"}\n{broken\n')
    dm = MLMDataModule(FolderMix(str(tmp_path)), **GOOD, val_docs_per_lang=0)
    batches = dm.train_batches()
    for _ in range(10):
        batch = next(batches)
    assert batch["num_tokens"] > 0 and int(batch["input_ids"].max()) < len(dm.tokenizer)


def test_unknown_language_in_a_hub_mix_is_excluded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: fao_Latn\n  data_files:\n  - split: train\n    path: data/fao_Latn/train/*\n---\n"
    )
    write_lang(tmp_path / "data", "fao_Latn", [{"text": "Veðrið er gott."}] * 4)
    mix = HubMix(name="m", token_counts={"fao": 5, "qqq": 5}, tokenizer="data/tokenizer", repo=str(tmp_path))
    dm = MLMDataModule(mix, **GOOD, val_docs_per_lang=1)
    dm.setup("fit")
    assert dm.languages == ["fao"]
    assert (
        "language 'qqq' excluded from training" in caplog.text
        and "has no config for language 'qqq'" in caplog.text
    )
