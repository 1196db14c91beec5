"""Pre-tokenized MDS shards: reading MosaicML's own output, our writer, and training from shards."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import FIXTURES

from mmbert.data import MdsMix, MdsWriter, MLMDataModule, merge_index
from mmbert.data.counts import CACHE_NAME
from mmbert.data.mds import ShardReader, find_shards, read_column, read_index
from mmbert.errors import DataError

FIXTURE = FIXTURES / "mds"  # written by mosaicml-streaming (scripts/make_mds_fixture.py)


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    # a copy without the committed token-count cache: counts are measured, and written outside the repository
    copy = Path(shutil.copytree(FIXTURE, tmp_path / "mds"))
    (copy / CACHE_NAME).unlink(missing_ok=True)
    return copy


def read_all(shards: list) -> dict[str, list[int]]:
    out = {}
    for shard in shards:
        reader = ShardReader(shard)
        for i in range(len(reader)):
            raw = reader.raw(i)
            out[read_column(shard, raw, "id")] = read_column(shard, raw, "input_ids").tolist()
    return out


def test_reads_shards_written_by_mosaicml_streaming(fixture_copy: Path) -> None:
    expected = json.loads((fixture_copy / "expected.json").read_text())
    mix = MdsMix(str(fixture_copy), tokenizer="data/tokenizer")
    assert mix.languages == sorted(expected)
    for lang, shards in mix.shards.items():
        assert read_all(shards) == expected[lang]
    # zstd shards and the generic "ndarray" encoding are both in the fixture
    assert any(s.compression == "zstd" for s in mix.shards["fao_Latn"])
    assert {s.column_encodings for s in mix.shards["fao_Latn"]} == {("str", "ndarray")}  # id, input_ids


@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize("encoding", ["ndarray:uint32", "ndarray"])
def test_writer_round_trip_with_nested_sources(
    tmp_path: Path, compression: str | None, encoding: str
) -> None:
    rng = np.random.default_rng(0)
    docs = {
        src: [
            (f"{src}-{i}", rng.integers(0, 300_000, int(rng.integers(1, 400))).astype(np.uint32))
            for i in range(30)
        ]
        for src in ("eng_Latn", "code")
    }
    for src, items in docs.items():
        for part in range(2):
            with MdsWriter(
                tmp_path / "train" / src / f"part{part}",
                {"input_ids": encoding, "id": "str"},
                3000,
                compression,
            ) as w:
                for doc_id, ids in items[part::2]:
                    w.write({"input_ids": ids, "id": doc_id})
    merge_index(tmp_path / "train")
    root_index = read_index(tmp_path / "train" / "index.json")
    assert len(root_index) == len(find_shards(tmp_path / "train")) > 4
    assert all(s.path.exists() for s in root_index)
    mix = MdsMix(str(tmp_path), tokenizer="data/tokenizer")
    assert sorted(mix.languages) == ["code", "eng_Latn"]
    for src, items in docs.items():
        assert read_all(mix.shards[src]) == {i: ids.tolist() for i, ids in items}


def test_training_from_pretokenized_shards(fixture_copy: Path) -> None:
    mix = MdsMix(str(fixture_copy), tokenizer="data/tokenizer")
    counts = mix.token_counts()
    expected = json.loads((fixture_copy / "expected.json").read_text())
    # counts are body tokens + <bos>/<eos> per document; the shards' first chunks start with <bos> already
    bos = mix.train_source("eng_Latn").bos_id
    want = {
        lang: sum(len(ids) + 2 - (ids[0] == bos) for ids in docs.values()) for lang, docs in expected.items()
    }
    assert counts == want
    dm = MLMDataModule(mix, seq_len=128, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=2)
    it = dm.train_batches()
    for _ in range(20):
        batch = next(it)
    cu = batch["cu_seqlens"].long()
    original = batch["labels"].where(batch["labels"] != -100, batch["input_ids"])
    starts = cu[:-1][cu[:-1] < batch["num_tokens"]]
    assert bool((original[starts] == dm.tokenizer.bos_token_id).all())  # one <bos> per chunk, not two
    assert bool((original[starts + 1] != dm.tokenizer.bos_token_id).all())
    assert dm.val_languages == mix.languages  # held-out documents


def test_bad_mds_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        MdsMix(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MDS shards"):
        MdsMix(str(tmp_path / "empty"))
    with MdsWriter(tmp_path / "x" / "src", {"input_ids": "ndarray:uint32", "id": "str"}) as w:
        w.write({"input_ids": np.arange(5, dtype=np.uint32), "id": "a"})
    shard = tmp_path / "x" / "src" / "shard.00000.mds"
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(DataError, match=re.escape(str(shard))):
        ShardReader(find_shards(tmp_path / "x")[0])
