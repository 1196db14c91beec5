"""Tokens per language of a folder or shard mix: counted exactly, or estimated from a sample, and cached.

``exact`` tokenizes every document (days for a full FineWeb2 copy). ``estimate`` (the default of folder
mixes) tokenizes a bounded sample of each language, ``sample_bytes`` spread over up to ``SAMPLE_FILES`` of
its files, and scales its tokens (and documents) per byte by the language's total bytes, which are known
without tokenizing:

- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``: the (decompressed) bytes and lines, counted without decoding a
  record (decompressing and counting newlines is two orders of magnitude faster than tokenizing);
- ``.parquet``: the text column's uncompressed size (minus the 4-byte length of each value) and the row
  counts, from the file's metadata, scaled to text bytes by the first row group of each sampled file (read,
  not tokenized);
- ``.txt``: the file sizes.

A sample's bytes are measured in the same units (a JSON line with its newline, a paragraph with its blank
line, a parquet value's UTF-8 bytes), and tokens are scaled by text bytes (:func:`estimate_tokens`). A language whose files hold at most ``sample_bytes`` is counted
exactly, so small languages (and the sample corpus) are never estimated. Pre-tokenized sources are counted
exactly: that reads shards but tokenizes nothing.

Counts are cached in ``<root>/mmbert_token_counts.json`` (:class:`CountCache`): per tokenizer fingerprint
and language, the tokens, documents, the files' sizes (a changed file invalidates the entry) and
``"estimated": true`` for estimates. An exact entry serves an estimate request, not the other way round.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from mmbert.data.mix.base import Source
from mmbert.data.readers import SkipCounter, file_format, zstd_chunks
from mmbert.data.tokenizer import encode_bodies
from mmbert.errors import DataError

if TYPE_CHECKING:  # the folder backend counts with this module: only its type is needed here
    from mmbert.data.mix.folder import FileSource

log = logging.getLogger(__name__)

CACHE_NAME = "mmbert_token_counts.json"
MDS_KEY = "mds"  # the cache key of pre-tokenized shards' counts, which no tokenizer changes
EXACT, ESTIMATE = "exact", "estimate"
METHODS = (EXACT, ESTIMATE)
SAMPLE_BYTES = 1 << 20  # per language: ~0.3 s of one core's tokenizer; estimates within 1% on real text
SAMPLE_FILES = 8  # files a language's sample is spread over (its first, last and evenly between)
_ENCODE_BATCH = 256


def check_method(method: str, where: str = "count_tokens") -> str:
    if method not in METHODS:
        raise DataError(f"{where} must be one of {list(METHODS)}, got {method!r}")
    return method


def tokenizer_fingerprint(tok: PreTrainedTokenizerFast) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16]


class _Tally:
    """Tokens (body + ``<bos>``/``<eos>``) and documents of decoded documents, tokenized in batches."""

    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        self.backend = tok.backend_tokenizer
        self.tokens = self.docs = 0
        self._texts: list[str] = []

    def add(self, doc: Any) -> None:
        self.docs += 1
        if isinstance(doc, str):
            self._texts.append(doc)
            if len(self._texts) >= _ENCODE_BATCH:
                self.flush()
        else:
            self.tokens += len(doc) + 2

    def flush(self) -> None:
        if self._texts:
            self.tokens += sum(len(ids) + 2 for ids in encode_bodies(self.backend, self._texts))
            self._texts.clear()


def measure_tokens(source: Source, tok: PreTrainedTokenizerFast) -> tuple[int, int]:
    """(tokens, documents) of a source, exactly: body tokens plus ``<bos>``/``<eos>`` per document."""
    tally = _Tally(tok)
    for f, path in enumerate(source.files()):
        skips = SkipCounter()
        for block in source.blocks(f, None, 1024):
            for raw in block.raws:
                doc = source.decode(f, raw, skips)
                if doc is not None:
                    tally.add(doc)
        if skips:
            log.warning(skips.summary(path))
    tally.flush()
    return tally.tokens, tally.docs  # (0, 0) without usable documents: setup excludes (or refuses) it


def _count_lines(chunks: Iterator[bytes]) -> tuple[int, int]:
    """(bytes, lines) of a byte stream; a last line without its newline counts."""
    size = lines = 0
    last = b"\n"
    for chunk in chunks:
        if chunk:
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return size, lines + (last != b"\n")


def _file_chunks(path: Path, fmt: str) -> Iterator[bytes]:
    if fmt == "jsonl.zst":
        yield from zstd_chunks(path)
        return
    with gzip.open(path, "rb") if fmt == "jsonl.gz" else open(path, "rb") as f:
        yield from iter(lambda: f.read(1 << 22), b"")


def file_extent(path: Path, text_field: str) -> tuple[int, int | None]:
    """(bytes, records) of a file in the units :func:`record_bytes` measures records in, without decoding
    a record: JSON lines are counted, parquet sizes and rows come from its metadata; records None for txt."""
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            meta = pq.ParquetFile(path).metadata
            names = [meta.schema.column(i).name for i in range(meta.num_columns)]
            if text_field not in names:
                raise DataError(f"{path}: no column {text_field!r} (columns: {names})")
            col = names.index(text_field)
            groups = range(meta.num_row_groups)
            size = sum(meta.row_group(rg).column(col).total_uncompressed_size for rg in groups)
            return max(size - 4 * meta.num_rows, 0), meta.num_rows  # less each value's 4-byte length
        if fmt == "txt":
            return path.stat().st_size, None
        return _count_lines(_file_chunks(path, str(fmt)))
    except DataError:
        raise
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: corrupt or unreadable {fmt} file ({type(e).__name__}: {e})") from e


def record_bytes(raw: Any, fmt: str) -> int:
    if fmt == "parquet":
        return len(raw.encode("utf-8")) if isinstance(raw, str) else 0
    if fmt == "txt":
        return len(raw.encode("utf-8")) + 2  # the paragraph's newline and the blank line after it
    return len(raw) if raw.endswith(b"\n") else len(raw) + 1


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices out of ``n``, first and last included, evenly between."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


class _Sample:
    """Per sampled record: its bytes in file units and its text's UTF-8 bytes; tokens of its documents."""

    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        self.tally = _Tally(tok)
        self.units: list[int] = []
        self.text: list[int] = []
        self.parquet_scale: list[tuple[int, int]] = []  # (text bytes, metadata bytes) of whole row groups

    def add(self, units: int, doc: Any) -> None:
        self.units.append(units)
        self.text.append(len(doc.encode("utf-8")) if isinstance(doc, str) else 0)
        if doc is not None:
            self.tally.add(doc)

    def line_model(self) -> tuple[float, float]:
        """(overhead per record, record bytes per text byte) fitted to the sampled records: an id and other
        fields add about the same bytes to every record, escapes (``\\uXXXX``) a share of its text."""
        u, t = np.asarray(self.units, dtype=np.float64), np.asarray(self.text, dtype=np.float64)
        if len(u) > 2 and t.std() > 0.05 * t.mean():
            slope, overhead = np.polyfit(t, u, 1)
            if slope > 0.5 and overhead >= 0:
                return float(overhead), float(slope)
        return float((u - t).mean()), 1.0

    def calibrate_parquet(self, path: Path, text_field: str) -> None:
        """Text bytes against metadata bytes of the file's first row group (read, not tokenized)."""
        pf = pq.ParquetFile(path)
        if not pf.num_row_groups:
            return
        meta = pf.metadata.row_group(0)
        col = pf.schema_arrow.names.index(text_field)
        values = pf.read_row_group(0, columns=[text_field]).column(0)
        text = pc.sum(pc.binary_length(values.cast(pa.binary()))).as_py() or 0
        self.parquet_scale.append((text, meta.column(col).total_uncompressed_size - 4 * meta.num_rows))


def estimate_tokens(
    source: FileSource, tok: PreTrainedTokenizerFast, sample_bytes: int = SAMPLE_BYTES
) -> tuple[int, int, bool]:
    """(tokens, documents, estimated) of a local source: exact when its files hold <= ``sample_bytes``.

    Tokens scale with a document's *text* bytes, not with its record's (a JSON line also holds an id and
    other fields): the language's text bytes come from its bytes and records through the record model of
    the sample (:meth:`_Sample.line_model`; parquet: text against metadata bytes of whole first row groups),
    and its tokens are the sample's tokens per text byte times those, plus ``<bos>``/``<eos>`` of each
    usable document.
    """
    files = [Path(f) for f in source.files()]
    extents = [file_extent(f, source.text_field) for f in files]
    if sum(units for units, _ in extents) <= sample_bytes:
        return (*measure_tokens(source, tok), False)
    picked = _spread(len(files), SAMPLE_FILES)
    sample = _Sample(tok)
    for f in picked:
        budget, fmt, taken = sample_bytes / len(picked), file_format(files[f]), 0
        if fmt == "parquet":
            sample.calibrate_parquet(files[f], source.text_field)
        skips = SkipCounter()
        for block in source.blocks(f, None, 64):
            for raw in block.raws:
                sample.add(record_bytes(raw, fmt), source.decode(f, raw, skips))  # type: ignore[arg-type]
                taken += sample.units[-1]
                if taken >= budget:
                    break
            if taken >= budget:
                break
    sample.tally.flush()
    docs, text_seen = sample.tally.docs, sum(sample.text)
    if not docs or not text_seen:  # the sample held no usable document: the rest may
        return (*measure_tokens(source, tok), False)
    overhead, per_text = sample.line_model()
    mean_units = sum(sample.units) / len(sample.units)
    scale = sample.parquet_scale
    parquet_ratio = sum(t for t, _ in scale) / max(sum(m for _, m in scale), 1) if scale else 1.0
    text = records = 0.0
    for path, (units, n) in zip(files, extents, strict=True):
        if file_format(path) == "parquet":
            text += parquet_ratio * units
            records += n or 0
        else:
            n = n if n is not None else units / mean_units
            text += max(units - overhead * n, 0.0) / per_text
            records += n
    good = docs / len(sample.units) * records
    tokens = (sample.tally.tokens - 2 * docs) / text_seen * text + 2 * good
    return round(tokens), max(round(good), 1), True


class CountCache:
    """Counted tokens per language, keyed by tokenizer and file list (relative paths and sizes).

    Stored in ``<root>/mmbert_token_counts.json`` (committed for the sample corpus), or under
    ``~/.cache/mmbert`` when the data folder is read-only.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / CACHE_NAME
        if not os.access(root, os.W_OK) and not self.path.exists():
            key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
            self.path = (
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmbert" / f"{key}.json"
            )
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError):
            self.data = {}

    def fingerprint(self, files: Sequence[str]) -> dict[str, int]:
        return {Path(f).relative_to(self.root).as_posix(): Path(f).stat().st_size for f in files}

    def entry(self, tok_key: str, lang: str, files: Sequence[str], method: str = ESTIMATE) -> dict | None:
        """The cached entry of these files, if current and good enough for ``method``."""
        entry = self.data.get(tok_key, {}).get(lang)
        if not entry or entry["files"] != self.fingerprint(files):
            return None
        return None if method == EXACT and entry.get("estimated") else entry

    def get(self, tok_key: str, lang: str, files: Sequence[str], method: str = ESTIMATE) -> int | None:
        entry = self.entry(tok_key, lang, files, method)
        return None if entry is None else entry["tokens"]

    def find(self, files: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
        """``{tokenizer key: {lang: tokens}}`` of the keys that hold every language of ``files`` as it is
        now; looked up without the tokenizer (whose fingerprint is the key)."""
        found = {}
        for tok_key in self.data:
            counts = {lang: self.get(tok_key, lang, f) for lang, f in files.items()}
            if all(n is not None for n in counts.values()):
                found[tok_key] = counts
        return found

    def mean_doc_tokens(self, tok_key: str, lang: str, files: Sequence[str]) -> float | None:
        """Tokens per document of the cached count of these files, or None."""
        entry = self.entry(tok_key, lang, files)
        return entry["tokens"] / entry["docs"] if entry and entry.get("docs") else None

    def put(
        self, tok_key: str, lang: str, files: Sequence[str], tokens: int, docs: int, estimated: bool = False
    ) -> None:
        entry: dict[str, Any] = {"files": self.fingerprint(files), "tokens": tokens, "docs": docs}
        if estimated:
            entry["estimated"] = True
        self.data.setdefault(tok_key, {})[lang] = entry

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        except OSError as e:
            log.warning("could not write the token count cache %s: %s", self.path, e)


def cached_counts(
    cache: CountCache,
    tok_key: str,
    sources: Mapping[str, Source],
    count: Callable[[Source], tuple[int, int, bool]],
    method: str,
) -> dict[str, int]:
    """Tokens of each source: from the cache, else ``count(source)`` (then cached), with a progress bar."""
    counts: dict[str, int] = {}
    todo = []
    for lang, src in sources.items():
        n = cache.get(tok_key, lang, src.files(), method)
        if n is None:
            todo.append(lang)
        else:
            counts[lang] = n
    if todo:
        bar = tqdm(todo, desc=f"counting tokens ({method})", unit="lang", leave=False)
        total = 0
        for lang in bar:
            src = sources[lang]
            tokens, docs, estimated = count(src)
            cache.put(tok_key, lang, src.files(), tokens, docs, estimated)
            counts[lang] = tokens
            total += tokens
            bar.set_postfix_str(f"{lang}, {total:,} tokens")
        cache.save()
    return {lang: counts[lang] for lang in sources}
