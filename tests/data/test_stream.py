"""Sharding over ranks x workers, per-source epochs and reshuffling, and stream resumption."""

from __future__ import annotations

import logging
import os
from collections import Counter

import pytest
from torch.utils.data import DataLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import MLMDataModule, SampleMix
from mmbert.data.doc_stream import DocStream
from mmbert.data.mix.folder import FileSource
from mmbert.data.rows import PackedRowDataset, identity

RANKS, WORKERS = 2, 2


@pytest.fixture(scope="module")
def mix() -> SampleMix:
    return SampleMix(subset="decay-all")


def by_epoch(stream: DocStream, n_epochs: int) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(n_epochs)]
    while True:
        doc = stream.next_doc()
        if stream.epoch >= n_epochs:
            return out
        out[stream.epoch].append(doc)


# eng: 4 files >= 4 shards (files are split); cmn: 3 files, fao: 1 file (records are split)
@pytest.mark.parametrize("lang", ["eng_Latn", "cmn_Hani", "fao_Latn", "tir_Ethi"])
def test_ranks_x_workers_see_every_document_exactly_once_per_epoch(mix: SampleMix, lang: str) -> None:
    source = mix.train_source(lang)
    everything = Counter(source.first_docs(10**9))
    seen: list[Counter[str]] = [Counter(), Counter()]
    reshuffled = False
    for rank in range(RANKS):
        for worker in range(WORKERS):
            stream = DocStream(source, rank * WORKERS + worker, RANKS * WORKERS, seed=5, block_size=64)
            epochs = by_epoch(stream, 2)
            for e, docs in enumerate(epochs):
                seen[e].update(docs)
            reshuffled |= epochs[0] != epochs[1]
    assert seen[0] == everything
    assert seen[1] == everything
    assert reshuffled


def test_stream_state_resumes_mid_block(mix: SampleMix) -> None:
    source = mix.train_source("rus_Cyrl")
    a = DocStream(source, 1, 3, seed=2, block_size=16)
    for _ in range(37):
        a.next_doc()
    b = DocStream(source, 1, 3, seed=2, block_size=16, state=a.state())
    assert [a.next_doc() for _ in range(500)] == [b.next_doc() for _ in range(500)]


def test_a_shard_without_documents_falls_back_to_the_whole_source(tmp_path, caplog) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n')
    stream = DocStream(FileSource("tiny", [path]), shard=3, num_shards=4, seed=0)
    with caplog.at_level(logging.WARNING):
        docs = {stream.next_doc() for _ in range(6)}
    assert docs == {"one", "two"}
    assert any("owns no documents" in r.getMessage() for r in caplog.records)


def test_dataloader_workers_and_ranks_map_to_distinct_shards(mix: SampleMix) -> None:
    dm = MLMDataModule(mix, seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3)
    dm.setup("fit")
    shards = {}
    for rank in range(RANKS):
        ds = PackedRowDataset(dm.pipeline, rank, RANKS, WORKERS)
        loader = DataLoader(ds, batch_size=None, num_workers=WORKERS, collate_fn=identity)
        items = []
        for item in loader:
            items.append(item)
            if len(items) == 6:
                break
        # in-order round robin over the workers
        assert [it["worker"] for it in items] == [0, 1] * 3
        shards[rank] = {it["shard"] for it in items}
    assert shards == {0: {0, 1}, 1: {2, 3}}
