"""The long tail of a mixture: languages with a handful of documents, or none, found before training starts."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import FolderMix, MLMDataModule
from mmbert.data.doc_stream import DocStream
from mmbert.errors import DataError

GOOD: dict[str, Any] = {"seq_len": 64, "rows_per_device": 2, "tau": 0.5, "mask_ratio": 0.3}


def write(root: Path, lang: str, records: list[dict], split: str = "train", name: str = "000.jsonl") -> None:
    folder = root / lang / split
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def texts(prefix: str, n: int) -> list[dict]:
    return [{"text": f"{prefix} document {i} " + "word " * (i % 4)} for i in range(n)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def val_docs(dm: MLMDataModule, lang: str) -> int:
    """Documents in a language's validation batches (each starts with <bos>)."""
    loader = dm.val_dataloader()[dm.val_languages.index(lang)]
    bos = dm.tokenizer.bos_token_id
    return sum(
        int((torch.where(b["labels"] != -100, b["labels"], b["input_ids"]) == bos).sum()) for b in loader
    )


def test_a_one_document_language_trains_on_its_document(tmp_path: Path, caplog) -> None:
    write(tmp_path, "eng_Latn", texts("English", 60))
    write(tmp_path, "fao_Latn", [{"text": "Eitt einasta skjal á føroyskum."}])
    dm = MLMDataModule(FolderMix(str(tmp_path)), **GOOD, val_docs_per_lang=4)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    (warning,) = [w for w in warnings(caplog) if "fao_Latn" in w]
    assert "all its 1 usable documents are among the 4 records to hold out" in warning
    assert "validates on 0 and trains on the last one" in warning
    assert dm.pipeline.sources[dm.languages.index("fao_Latn")].holdout == 0
    assert dm.languages == ["eng_Latn", "fao_Latn"] and dm.val_languages == ["eng_Latn"]
    batches = dm.train_batches()
    for _ in range(100):  # the training stream used to die here: the only document was held out
        next(batches)
    assert dm.realised_tokens["fao_Latn"] > 0 and not dm.excluded


def test_a_short_language_holds_out_fewer_records_and_keeps_the_last_document(tmp_path: Path) -> None:
    bad = [{"text": ""}, {"content": "no text"}]
    records = [{"text": "fyrsta"}, bad[0], {"text": "annað"}, bad[1], {"text": "triðja"}, bad[0]]
    write(tmp_path, "eng_Latn", texts("English", 60))
    write(tmp_path, "fao_Latn", records)
    dm = MLMDataModule(FolderMix(str(tmp_path)), **GOOD, val_docs_per_lang=32)
    dm.setup("fit")
    source = dm.pipeline.sources[dm.languages.index("fao_Latn")]
    assert source.holdout == 4  # records 0-3 hold the two validation documents
    stream = DocStream(source, shard=0, num_shards=1, seed=0)
    assert {stream.next_doc() for _ in range(5)} == {"triðja"}
    assert val_docs(dm, "fao_Latn") == 2


def test_held_out_documents_come_from_the_held_out_records_only(tmp_path: Path) -> None:
    # file 0 is shorter than the hold-out: validation must not take documents of file 1, which trains
    write(tmp_path, "eng_Latn", texts("English", 60))
    write(tmp_path, "fao_Latn", texts("stutt", 2), name="000.jsonl")
    write(tmp_path, "fao_Latn", texts("langt", 10), name="001.jsonl")
    dm = MLMDataModule(FolderMix(str(tmp_path)), **GOOD, val_docs_per_lang=4)
    dm.setup("fit")
    source = dm.pipeline.sources[dm.languages.index("fao_Latn")]
    stream = DocStream(source, shard=0, num_shards=1, seed=0)
    trained = {stream.next_doc() for _ in range(10)}
    assert trained == {r["text"] for r in texts("langt", 10)}
    assert val_docs(dm, "fao_Latn") == 2


@pytest.mark.parametrize("counted", [True, False])
def test_a_language_without_usable_documents_is_excluded_before_training(
    tmp_path: Path, caplog, counted: bool
) -> None:
    write(tmp_path, "eng_Latn", texts("English", 60))
    write(tmp_path, "isl_Latn", texts("Íslenska", 30))
    write(tmp_path, "fao_Latn", [{"text": ""}, {"text": "  "}, {"content": "skjal"}])
    write(
        tmp_path, "fao_Latn", texts("próvskjal", 3), split="test"
    )  # still validated, as a val-only language
    given = None if counted else {"eng_Latn": 900, "isl_Latn": 300, "fao_Latn": 50}
    dm = MLMDataModule(FolderMix(str(tmp_path), token_counts=given), **GOOD, val_docs_per_lang=2)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert any("'fao_Latn' excluded from training" in w for w in warnings(caplog))
    assert list(dm.excluded) == ["fao_Latn"] and "no usable documents" in dm.excluded["fao_Latn"]
    assert dm.languages == ["eng_Latn", "isl_Latn"] and list(dm.weights) == dm.languages
    assert sum(dm.weights.values()) == pytest.approx(1.0)
    report = dm.mixture_report()
    assert list(report["languages"]) == dm.languages and report["excluded"] == dm.excluded
    assert dm.val_languages == ["eng_Latn", "fao_Latn", "isl_Latn"]
    fao = next(iter(dm.val_dataloader()[1]))
    assert fao["lang_tokens"].shape == (2,) and int(fao["lang_tokens"].sum()) == 0 < fao["num_tokens"]
    batches = dm.train_batches()
    for _ in range(20):
        assert next(batches)["lang_tokens"].shape == (2,)
    assert set(dm.realised_tokens) == {"eng_Latn", "isl_Latn"}

    strict = MLMDataModule(FolderMix(str(tmp_path), token_counts=given), **GOOD, strict_languages=True)
    with pytest.raises(DataError, match=r"strict_languages.*fao_Latn: no usable documents in .*000\.jsonl"):
        strict.setup("fit")


def test_no_language_with_usable_documents_fails_setup(tmp_path: Path) -> None:
    write(tmp_path, "fao_Latn", [{"text": ""}])
    with pytest.raises(DataError, match="no language has a usable training document"):
        MLMDataModule(FolderMix(str(tmp_path)), **GOOD).setup("fit")


def test_a_1833_language_folder_starts_quickly(tmp_path: Path) -> None:
    # Decay-All's scale: 1833 FineWeb2-layout folders of 1-3 tiny documents, no test splits (every language
    # holds out validation records, most of them fewer than asked).
    codes = [
        "".join(c) for c in itertools.islice(itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=3), 1833)
    ]
    for i, iso in enumerate(codes):
        write(tmp_path, f"{iso}_{('Latn', 'Cyrl', 'Arab')[i % 3]}", texts(iso, 1 + i % 3))
    start = time.perf_counter()
    dm = MLMDataModule(FolderMix(str(tmp_path)), seq_len=1024, rows_per_device=2, tau=0.3, mask_ratio=0.3)
    dm.setup("fit")
    batch = next(dm.train_batches())
    seconds = time.perf_counter() - start
    print(f"1833 languages: counted, set up and first batch in {seconds:.1f} s")  # the README's figure (-s)
    assert len(dm.languages) == 1833 and batch["lang_tokens"].shape == (1833,) and batch["num_tokens"] > 0
    assert len(dm.val_languages) == 1222  # the languages with 2 or 3 documents validate on 1 or 2
    assert seconds < 30, seconds  # ~2 s on one core, counting the tokens of every language included
