"""Sharding by file at every file's share over repeated epochs, and full-length released chunks."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import MdsMix, MdsWriter, MLMDataModule, SampleMix
from mmbert.data.doc_stream import DocStream
from mmbert.data.mix.folder import FileSource
from mmbert.data.packing import frame_documents
from mmbert.data.tokenizer import load_tokenizer

SHARDS = 8


def text_files(tmp_path: Path, sizes: list[int]) -> tuple[FileSource, dict[str, int]]:
    """Files of real sample text with ``sizes[f]`` documents each; and each document's file."""
    docs = iter(SampleMix(subset="decay-all").train_source("eng_Latn").first_docs(sum(sizes)))
    paths, origin = [], {}
    for f, n in enumerate(sizes):
        path = tmp_path / f"{f:03d}.jsonl"
        with open(path, "w", encoding="utf-8") as out:
            for _ in range(n):
                text = next(docs)
                origin[text] = f
                out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        paths.append(path)
    assert len(origin) == sum(sizes)  # distinct documents
    return FileSource("eng_Latn", paths), origin


def draws_per_file(source: FileSource, origin: dict[str, int], per_shard: int) -> Counter[int]:
    """Every shard draws the language at the same rate: ``per_shard`` documents each."""
    drawn: Counter[int] = Counter()
    for shard in range(SHARDS):
        stream = DocStream(source, shard, SHARDS, seed=3, block_size=4)
        drawn.update(origin[stream.next_doc()] for _ in range(per_shard))
    return drawn


@pytest.mark.parametrize("cycles", [1, 3])
def test_ten_equal_files_over_eight_shards_are_drawn_equally(tmp_path: Path, cycles: int) -> None:
    source, origin = text_files(tmp_path, [5] * 10)
    # In G = 8 of its epochs a shard reads each of the 10 files once: 50 documents.
    drawn = draws_per_file(source, origin, 50 * cycles)
    assert drawn == dict.fromkeys(range(10), 5 * SHARDS * cycles)


def test_unequal_files_are_drawn_at_their_share(tmp_path: Path) -> None:
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    source, origin = text_files(tmp_path, sizes)
    drawn = draws_per_file(source, origin, sum(sizes))
    assert drawn == {f: n * SHARDS for f, n in enumerate(sizes)}


def test_each_epoch_is_still_a_partition_of_the_files(tmp_path: Path) -> None:
    source, _ = text_files(tmp_path, [3] * 10)
    for epoch in range(SHARDS + 2):
        owned = []
        for shard in range(SHARDS):
            stream = DocStream(source, shard, SHARDS, seed=1, state={"epoch": epoch})
            owned.extend(stream._file_order())
        assert sorted(owned) == list(range(10))
    # epoch 0 is sharded as before: shard g owns files g, g + 8, ...
    assert sorted(DocStream(source, 1, SHARDS, seed=1)._file_order()) == [1, 9]


def test_a_shard_resumes_across_rotated_epochs(tmp_path: Path) -> None:
    source, _ = text_files(tmp_path, [3] * 10)
    a = DocStream(source, 2, SHARDS, seed=4, block_size=2)
    for _ in range(11):
        a.next_doc()
    assert a.epoch > 1
    b = DocStream(source, 2, SHARDS, seed=4, block_size=2, state=a.state())
    assert [a.next_doc() for _ in range(40)] == [b.next_doc() for _ in range(40)]


def test_framing_keeps_a_full_length_released_chunk_whole() -> None:
    seq_len = 8192
    (chunks,) = frame_documents([np.arange(10, 10 + seq_len - 1)], seq_len, bos_id=2, eos_id=1)
    assert [len(c) for c in chunks] == [seq_len]
    assert chunks[0][0] == 2 and chunks[0][1:].tolist() == list(range(10, 10 + seq_len - 1))
    # one token shorter still gets its <eos>; one longer is split as before
    (short,) = frame_documents([list(range(seq_len - 2))], seq_len, 2, 1)
    assert [len(c) for c in short] == [seq_len] and short[0][-1] == 1
    (long,) = frame_documents([list(range(seq_len))], seq_len, 2, 1)
    assert [len(c) for c in long] == [seq_len, 4]


def test_released_full_chunks_become_whole_rows(tmp_path: Path) -> None:
    """Shards pre-chunked like the release (``<bos>`` + seq_len - 1 tokens of real text) train one chunk a
    row, never a full row plus a 3-token remainder."""
    seq_len = 64
    tok = load_tokenizer("data/tokenizer")
    texts = SampleMix(subset="decay-all").train_source("rus_Cyrl").first_docs(400)
    ids = [i for e in tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False) for i in e.ids]
    body = seq_len - 1
    chunks = [ids[lo : lo + body] for lo in range(0, len(ids) - body + 1, body)]
    with MdsWriter(tmp_path / "mds" / "rus_Cyrl", {"input_ids": "ndarray:uint32", "id": "str"}) as w:
        for i, chunk in enumerate(chunks):
            w.write({"input_ids": np.asarray([tok.bos_token_id, *chunk], dtype=np.uint32), "id": f"r{i}"})
    mix = MdsMix(str(tmp_path / "mds"), tokenizer="data/tokenizer")
    dm = MLMDataModule(mix, seq_len=seq_len, rows_per_device=4, tau=1.0, mask_ratio=0.3, val_docs_per_lang=0)
    batches = dm.train_batches()
    for _ in range(10):
        batch = next(batches)
        lens = np.diff(batch["cu_seqlens"].numpy())
        assert lens.tolist() == [seq_len] * 4
        assert batch["num_tokens"] == 4 * seq_len
