"""File formats, block restarts, discovery and bad input of the local FineWeb2-layout readers."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import FileSource, FolderMix
from mmbert.data.doc_stream import DocStream
from mmbert.data.mix.layout import discover_languages
from mmbert.data.readers import iter_blocks
from mmbert.errors import DataError

DOCS = [f"document {i}: " + "word " * (i % 7) for i in range(23)]


def _jsonl(docs: list[str]) -> bytes:
    return "".join(json.dumps({"id": str(i), "text": d}) + "\n" for i, d in enumerate(docs)).encode()


def write_all_formats(folder: Path, docs: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "parquet": folder / "a.parquet",
        "jsonl": folder / "b.jsonl",
        "jsonl.gz": folder / "c.jsonl.gz",
        "jsonl.zst": folder / "d.jsonl.zst",
        "txt": folder / "e.txt",
    }
    pq.write_table(
        pa.table({"id": [str(i) for i in range(len(docs))], "text": docs}), paths["parquet"], row_group_size=5
    )
    paths["jsonl"].write_bytes(_jsonl(docs))
    paths["jsonl.gz"].write_bytes(gzip.compress(_jsonl(docs)))
    paths["jsonl.zst"].write_bytes(zstandard.ZstdCompressor().compress(_jsonl(docs)))
    paths["txt"].write_text("\n\n".join(d.strip() for d in docs) + "\n", encoding="utf-8")
    return paths


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz", "jsonl.zst", "txt"])
def test_every_format_reads_the_documents_in_order(tmp_path: Path, fmt: str) -> None:
    path = write_all_formats(tmp_path, DOCS)[fmt]
    got = FileSource("xx", [path]).first_docs(10**6, block_size=4)
    want = [d.strip() for d in DOCS] if fmt == "txt" else DOCS
    assert got == want


def test_txt_documents_are_blank_line_separated_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first line\nsame document\n\n\n second document \n\nthird\n")
    assert FileSource("xx", [path]).first_docs(10) == [
        "first line\nsame document",
        " second document ",
        "third",
    ]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.gz", "jsonl.zst", "txt"])
def test_restarting_at_a_block_gives_the_rest_of_the_file(tmp_path: Path, fmt: str) -> None:
    path = write_all_formats(tmp_path, DOCS)[fmt]
    full = list(iter_blocks(path, "text", 3))
    for start in range(len(full)):
        tail = list(iter_blocks(path, "text", 3, start))
        assert [(b.ordinal, b.first_record, b.raws) for b in tail] == [
            (b.ordinal, b.first_record, b.raws) for b in full[start:]
        ]
    assert sum(len(b.raws) for b in full) == len(DOCS)


def test_bad_records_are_skipped_counted_and_cleaned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"text": "good one"}),
        "{not json",
        json.dumps({"content": "no text field"}),
        json.dumps({"text": 17}),
        json.dumps({"text": "   \n "}),
        json.dumps({"text": "nul\u0000inside"}),
        '{"text": "lone \\ud800 surrogate"}',
        json.dumps(["a", "list"]),
    ]
    path.write_text("\n".join(lines) + "\n")
    stream = DocStream(FileSource("xx", [path]), shard=0, num_shards=1, seed=0)
    with caplog.at_level(logging.WARNING):
        docs = [stream.next_doc() for _ in range(3)]
        while stream.epoch == 0:  # finishing the file emits the summary
            stream.next_doc()
    assert sorted(docs) == sorted(["good one", "nulinside", "lone ? surrogate"])
    summary = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert summary and str(path) in summary[0] and "5 bad records" in summary[0]
    assert "1 invalid JSON" in summary[0] and "1 empty" in summary[0]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.gz", "jsonl.zst"])
def test_corrupt_files_raise_naming_the_file(tmp_path: Path, fmt: str) -> None:
    path = write_all_formats(tmp_path, DOCS * 50)[fmt]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DataError, match=re.escape(str(path))):
        FileSource("xx", [path]).first_docs(10**6)


def test_parquet_without_text_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"content": ["a"]}), path)
    with pytest.raises(DataError, match=r"x\.parquet: no column 'text'"):
        FileSource("xx", [path]).first_docs(1)


def _lang(root: Path, name: str, docs: list[str] | None = None) -> Path:
    folder = root / name / "train"
    folder.mkdir(parents=True)
    if docs is not None:
        (folder / "000.jsonl").write_bytes(_jsonl(docs))
    return folder


def test_discovery_normalises_codes_and_accepts_a_data_subfolder(tmp_path: Path) -> None:
    _lang(tmp_path / "data", "rus_Cyrl", ["a"])
    _lang(tmp_path / "data", "en", ["b"])
    _lang(tmp_path / "data", "FAO-latn", ["c"])
    (tmp_path / "data" / "notes").mkdir()  # not a language folder: ignored
    assert sorted(discover_languages(tmp_path)) == ["eng_Latn", "fao_Latn", "rus_Cyrl"]


def test_discovery_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        discover_languages(tmp_path / "missing")
    with pytest.raises(DataError, match="no language folders"):
        discover_languages(tmp_path)
    empty = _lang(tmp_path, "tir_Ethi")
    with pytest.raises(DataError, match=re.escape(str(empty))):
        discover_languages(tmp_path)
    empty.rmdir()
    (tmp_path / "tir_Ethi").rmdir()
    _lang(tmp_path, "ru", ["a"])
    _lang(tmp_path, "rus_Cyrl", ["b"])
    with pytest.raises(DataError, match="both language 'rus_Cyrl'"):
        discover_languages(tmp_path)


def test_unknown_two_letter_code_and_unknown_language(tmp_path: Path) -> None:
    _lang(tmp_path, "qq", ["a"])
    with pytest.raises(DataError, match="unknown 2-letter language code 'qq'"):
        discover_languages(tmp_path)
    (tmp_path / "qq" / "train" / "000.jsonl").unlink()
    (tmp_path / "qq" / "train").rmdir()
    (tmp_path / "qq").rmdir()
    _lang(tmp_path, "fao_Latn", ["a"])
    with pytest.raises(DataError, match="unknown language 'xyz_Latn'"):
        FolderMix(str(tmp_path), languages=["xyz_Latn"])


def test_a_source_with_only_bad_records_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "empty_docs.jsonl"
    path.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "  "}) + "\n")
    stream = DocStream(FileSource("zz", [path]), shard=0, num_shards=1, seed=0)
    with pytest.raises(DataError, match="no usable documents"):
        stream.next_doc()
