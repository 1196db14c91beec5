"""Readers for FineWeb2-layout files: parquet, jsonl, jsonl.gz, jsonl.zst and txt.

A file is read in *blocks* of consecutive records so that a reader can restart at any block (exact
resumption) without keeping whole files in memory. A record is returned raw (a JSON line, a parquet value,
a txt paragraph) and only decoded by :func:`decode_record` after sharding, so that a worker pays only for the
records it owns. Decoding is where bad records are skipped and counted:

- jsonl: one JSON object per line with a string field ``text_field`` (invalid JSON, a missing or non-string
  field, or an empty text is skipped and counted);
- parquet: the ``text_field`` column (null or empty values are skipped and counted);
- txt: documents are separated by one or more blank lines (a paragraph is a document; a file without blank
  lines is one document).

Texts are cleaned rather than skipped for NUL characters (removed) and unpaired surrogates (replaced), which
would otherwise crash the tokenizer inside a worker.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq
import zstandard

from mmbert.errors import DataError, HubError

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".txt")
# JSON lines under the names datasets also reads them by (e.g. codeparrot's file-*.json.gz on the Hub).
_ALIASES = {".json.gz": "jsonl.gz"}
Opener = Callable[[], IO[bytes]]  # opens a file for binary reading (local, or a Hub file read by range)
# What a corrupt file raises while read (pyarrow's ArrowInvalid is a ValueError).
_READ_ERRORS = (OSError, EOFError, ValueError, zstandard.ZstdError)


def file_format(path: str | Path) -> str | None:
    name = str(path).lower()
    for suffix, fmt in _ALIASES.items():
        if name.endswith(suffix):
            return fmt
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".")
    return None


@dataclass
class Block:
    """``raws[i]`` is record ``first_record + i`` of the file; ``cursor`` restarts reading at this block."""

    cursor: Any
    ordinal: int
    first_record: int
    raws: list[Any]


class SkipCounter(Counter[str]):
    """Reasons for skipped records of one file; summarised in one warning per file."""

    def summary(self, path: str) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.items()))
        return f"{path}: skipped {sum(self.values())} bad records ({reasons})"


_JSON = json.JSONDecoder()


def clean_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def decode_record(raw: Any, fmt: str, text_field: str, skips: SkipCounter) -> str | None:
    """The document text of a raw record, or None (counted in ``skips``) for a bad record."""
    escaped = None
    if fmt.startswith("jsonl"):
        # Only a JSON escape can produce an unpaired surrogate; Arrow and text files hold valid UTF-8.
        try:
            escaped = raw.decode("utf-8")
            obj = _JSON.decode(escaped)
        except (json.JSONDecodeError, UnicodeDecodeError):
            skips["invalid JSON"] += 1
            return None
        if not isinstance(obj, dict) or text_field not in obj:
            skips[f"no '{text_field}'"] += 1
            return None
        raw = obj[text_field]
    if raw is None or (fmt != "txt" and not isinstance(raw, str)):
        skips[f"null or non-string '{text_field}'"] += 1
        return None
    text = clean_text(raw) if "\x00" in raw or (escaped and "\\u" in escaped) else raw
    if not text.strip():
        skips["empty"] += 1
        return None
    return text


def zstd_chunks(path: Path, opener: Opener | None = None) -> Iterator[bytes]:
    """Decompressed data of a (multi-frame) zstd file; a truncated last frame raises ``EOFError``.

    ``zstandard``'s stream reader ends quietly on a truncated file, which would silently drop data.
    """
    dobj, in_frame = zstandard.ZstdDecompressor().decompressobj(), False
    with (opener or _local(path))() as f:
        while chunk := f.read(1 << 20):
            while chunk:
                in_frame = True
                yield dobj.decompress(chunk)
                chunk = b""
                if dobj.eof:
                    chunk, in_frame = dobj.unused_data, False
                    dobj = zstandard.ZstdDecompressor().decompressobj()
    if in_frame:
        raise EOFError("truncated zstd stream")


def _local(path: Path) -> Opener:
    return lambda: open(path, "rb")


def _lines(path: Path, fmt: str, opener: Opener) -> Iterator[bytes]:
    if fmt == "jsonl.zst":
        tail = b""
        for data in zstd_chunks(path, opener):
            *lines, tail = (tail + data).split(b"\n")
            yield from (line for line in lines if line.strip())
        if tail.strip():
            yield tail
        return
    with opener() as raw:
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if fmt == "jsonl.gz" else raw
        for line in io.BufferedReader(stream, 1 << 20):  # type: ignore[arg-type]
            if line.strip():
                yield line


def _paragraphs(opener: Opener) -> Iterator[str]:
    with io.TextIOWrapper(opener(), encoding="utf-8", errors="replace") as f:
        para: list[str] = []
        for line in f:
            if line.strip():
                para.append(line.rstrip("\n"))
            elif para:
                yield "\n".join(para)
                para = []
        if para:
            yield "\n".join(para)


def _parquet_blocks(
    path: Path, text_field: str, block_size: int, start: int, opener: Opener
) -> Iterator[Block]:
    with opener() as f:
        yield from _row_group_blocks(pq.ParquetFile(f), path, text_field, block_size, start)


def _row_group_blocks(
    pf: pq.ParquetFile, path: Path, text_field: str, block_size: int, start: int
) -> Iterator[Block]:
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
    ordinal = first = 0
    for rg in range(pf.num_row_groups):
        rows = pf.metadata.row_group(rg).num_rows
        n_blocks = -(-rows // block_size)
        if ordinal + n_blocks <= start:  # skip whole row groups without reading them
            ordinal += n_blocks
            first += rows
            continue
        values = pf.read_row_group(rg, columns=[text_field]).column(0).to_pylist()
        for lo in range(0, rows, block_size):
            if ordinal >= start:
                yield Block(ordinal, ordinal, first + lo, values[lo : lo + block_size])
            ordinal += 1
        first += rows


def _sequence_blocks(records: Iterator[Any], block_size: int, start: int) -> Iterator[Block]:
    skip = start * block_size
    ordinal = start
    block: list[Any] = []
    for i, rec in enumerate(records):
        if i < skip:  # restarting: records before the block are passed over undecoded
            continue
        block.append(rec)
        if len(block) == block_size:
            yield Block(ordinal, ordinal, ordinal * block_size, block)
            ordinal += 1
            block = []
    if block:
        yield Block(ordinal, ordinal, ordinal * block_size, block)


def iter_blocks(
    path: Path | str, text_field: str, block_size: int, start: int = 0, opener: Opener | None = None
) -> Iterator[Block]:
    """Blocks of ``block_size`` raw records of one file, from block ``start`` on; ``opener`` opens it (default:
    the local file ``path``; a Hub file passes its range reader, and ``path`` names it).

    A corrupt file (bad parquet, truncated gzip/zstd, unreadable) raises :class:`DataError` naming it.
    """
    fmt = file_format(path)
    if fmt is None:
        raise DataError(f"{path}: unsupported file type (supported: {', '.join(SUFFIXES)})")
    opener = opener or _local(Path(path))
    try:
        if fmt == "parquet":
            yield from _parquet_blocks(Path(path), text_field, block_size, start, opener)
        elif fmt == "txt":
            yield from _sequence_blocks(_paragraphs(opener), block_size, start)
        else:
            yield from _sequence_blocks(_lines(Path(path), fmt, opener), block_size, start)
    except (DataError, HubError, GeneratorExit):  # GeneratorExit: a generator closed at interpreter exit
        raise
    except _READ_ERRORS as e:
        raise DataError(f"{path}: corrupt or unreadable {fmt} file ({type(e).__name__}: {e})") from e
