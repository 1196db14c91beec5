"""Tokens per language of a folder or shard mix: counted exactly, or estimated from a sample, and cached.

``exact`` tokenizes every document (days for a full FineWeb2 copy). ``estimate`` (the default of folder
mixes) tokenizes a bounded sample of each language, about ``sample_bytes``, and scales its tokens per text
byte by the language's total text bytes, which are known without tokenizing:

- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``: the (decompressed) bytes and lines, counted without decoding a
  record (decompressing and counting newlines is two orders of magnitude faster than tokenizing);
- ``.parquet``: the text column's uncompressed size (minus the 4-byte length of each value) and the row
  counts, from the file's metadata, scaled to text bytes by the row groups the sample reads;
- ``.txt``: the file sizes.

The sample is spread, not the first bytes: a corpus sorted by length, date or source would be mis-estimated
by its head. ``SAMPLE_WINDOWS`` windows, evenly spaced over all of a language's bytes (files in order, a
seeded offset), cover ``sample_bytes``; the parts of records they cover are tokenized (with a little
context, so cut words count as in place), plain JSON lines are seeked to, compressed ones read as a stream,
parquet files read only the row groups a window falls in (:func:`spread_windows`, :class:`_Sample`).

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
import io
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from mmbert.data.mix.base import Doc, Source
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
SAMPLE_WINDOWS = 512  # per language: strata of its bytes, each sampled at one seeded random window
_ENCODE_BATCH = 256
_CONTEXT = 32  # characters tokenized on each side of a covered part, so its edges split as in place


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


def spread_windows(
    sizes: Sequence[int], budget: int, seed: int
) -> tuple[dict[int, list[tuple[int, int]]], float, float]:
    """``SAMPLE_WINDOWS`` windows of ``budget / k`` bytes, one in each of ``k`` equal strata (``stride``
    bytes) of all the files' bytes together, all at the same seeded random place in their stratum: per
    file its sorted ``(start, end)`` windows, the stride and the width.

    Systematic sampling: a corpus sorted by length, date or source is sampled evenly across its whole
    order, a file in proportion to its size (so file order biases nothing), and a sample of most of the
    bytes leaves no random gaps.
    """
    k = max(1, min(SAMPLE_WINDOWS, budget))
    stride, width = sum(sizes) / k, budget / k
    starts = (np.arange(k) + np.random.default_rng(seed).random()) * stride
    bounds = np.cumsum([0, *sizes])
    windows: dict[int, list[tuple[int, int]]] = {}
    for pos in starts:
        f = int(np.searchsorted(bounds, pos, side="right")) - 1
        a = int(pos - bounds[f])
        windows.setdefault(f, []).append((a, min(int(a + width), sizes[f])))
    return windows, stride, width


Span = tuple[int, int, Any]  # a record's (start, end) byte offsets in file_extent's units, and the raw record


class _LineRecords:
    """JSON lines (or txt paragraphs) of a file with their spans, read forward. ``skip_to`` passes over the
    records before an offset: a plain JSON-lines file seeks back from it to its line's start, a stream
    (compressed, or txt, whose paragraphs can only be told from the start) is read on."""

    def __init__(self, f: IO[bytes], fmt: str) -> None:
        self.f, self.fmt = f, fmt
        self.pos = 0  # end of the last record read
        self._pending: Span | None = None  # a record read by skip_to, not yet returned

    def _read(self) -> Span | None:
        start, lines = self.pos, []
        while line := self.f.readline():
            self.pos += len(line)
            if line.strip():
                if not lines:
                    start = self.pos - len(line)
                lines.append(line)
                if self.fmt != "txt":
                    break
            elif lines:  # the blank line that ends a paragraph
                break
        if not lines:
            return None
        raw = lines[0] if self.fmt != "txt" else b"".join(lines).decode("utf-8", "replace").rstrip("\n")
        return start, self.pos, raw

    def next(self) -> Span | None:
        span, self._pending = self._pending, None
        return span or self._read()

    def skip_to(self, offset: int) -> None:
        if offset < self.pos:
            return
        self._pending = None
        if self.fmt == "jsonl":
            self.pos = _line_start(self.f, offset)
            self.f.seek(self.pos)
            return
        while (span := self._read()) is not None:
            if span[1] > offset:
                self._pending = span
                return


def _line_start(f: IO[bytes], offset: int) -> int:
    """Offset of the line holding byte ``offset`` of a seekable file."""
    end = offset
    while end > 0:
        lo = max(end - (1 << 16), 0)
        f.seek(lo)
        newline = f.read(end - lo).rfind(b"\n")
        if newline >= 0:
            return lo + newline + 1
        end = lo
    return 0


class _ParquetRows:
    """Rows of a parquet file's text column with their spans, reading only the row groups skipped to; a
    row's span is its share of its group's metadata bytes, in proportion to its text bytes. Each group
    read adds its (text bytes, metadata bytes) to ``scale``."""

    def __init__(self, path: Path, text_field: str, scale: list[tuple[int, int]]) -> None:
        self.pf = pq.ParquetFile(path)
        self.col = self.pf.schema_arrow.names.index(text_field)
        self.scale = scale
        meta = self.pf.metadata
        units = [meta.row_group(g).column(self.col).total_uncompressed_size - 4 * meta.row_group(g).num_rows
                 for g in range(meta.num_row_groups)]  # fmt: skip
        self.bounds = np.cumsum([0, *(max(u, 0) for u in units)])
        self.group = -1
        self.pos = 0
        self.values: pa.Array = pa.array([], pa.string())
        self.starts = self.ends = np.zeros(0)
        self.row = 0  # the next row of the group read

    def _load(self, group: int) -> None:
        values = self.pf.read_row_group(group, columns=[self.pf.schema_arrow.names[self.col]]).column(0)
        sizes = pc.fill_null(pc.binary_length(values.cast(pa.binary())), 0).to_numpy(zero_copy_only=False)
        lo, units = int(self.bounds[group]), int(self.bounds[group + 1] - self.bounds[group])
        text = int(sizes.sum())
        self.scale.append((text, units))
        self.ends = lo + np.cumsum(sizes) * (units / max(text, 1))
        self.starts = np.concatenate([[lo], self.ends[:-1]])
        self.values, self.group, self.row = values, group, 0

    def next(self) -> Span | None:
        while self.row >= len(self.values):
            if self.group + 1 >= len(self.bounds) - 1:
                return None
            self._load(self.group + 1)
        i, self.row = self.row, self.row + 1
        self.pos = int(self.ends[i])
        return float(self.starts[i]), float(self.ends[i]), self.values[i].as_py()

    def skip_to(self, offset: int) -> None:
        if offset < self.pos:
            return
        group = int(np.searchsorted(self.bounds, offset, side="right")) - 1
        if group >= len(self.bounds) - 1:  # past the last row
            self.group, self.row, self.values = group, 0, self.values.slice(0, 0)
            return
        if group != self.group:
            self._load(group)
        self.row = max(self.row, int(np.searchsorted(self.ends, offset, side="right")))


Hit = tuple[list[tuple[float, float]], float, Any]  # a record's covered parts, its bytes, the raw record


def _covered(records: _LineRecords | _ParquetRows, windows: Sequence[tuple[int, int]]) -> Iterator[Hit]:
    """``(parts, length, raw)`` of each record overlapping the sorted windows: the parts of it they cover
    (as fractions ``(lo, hi)`` of it), and its bytes."""
    k = 0
    while k < len(windows):
        records.skip_to(windows[k][0])
        span = records.next()
        if span is None:
            return
        start, end, raw = span
        while k < len(windows) and windows[k][1] <= start:
            k += 1
        parts, length = [], max(end - start, 1)
        for a, b in windows[k:]:
            if a >= end:
                break
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                parts.append(((lo - start) / length, (hi - start) / length))
        if parts:
            yield parts, length, raw


def _open_lines(path: Path, fmt: str) -> IO[bytes]:
    if fmt == "jsonl.zst":
        raw = open(path, "rb")  # noqa: SIM115 (closed with the reader: closefd)
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, 1 << 20)  # type: ignore[arg-type]
    return gzip.open(path, "rb") if fmt == "jsonl.gz" else open(path, "rb")


def window_records(
    path: Path, text_field: str, windows: Sequence[tuple[int, int]], scale: list[tuple[int, int]]
) -> Iterator[Hit]:
    """``(covered parts, record bytes, raw record)`` of the records of a file that overlap its sorted
    windows (raw as :func:`mmbert.data.readers.iter_blocks` gives them). Compressed JSON lines are read as
    one stream up to the last window: :func:`file_extent` has decompressed the whole file already, and
    tokenizing the sample costs more than that."""
    fmt = str(file_format(path))
    try:
        if fmt == "parquet":
            yield from _covered(_ParquetRows(path, text_field, scale), windows)
            return
        with _open_lines(path, fmt) as f:
            yield from _covered(_LineRecords(f, fmt), windows)
    except (OSError, EOFError, ValueError, zstandard.ZstdError) as e:
        raise DataError(f"{path}: corrupt or unreadable {fmt} file ({type(e).__name__}: {e})") from e


class _Sample:
    """The sampled records, and the parts of their texts the windows cover. Every byte is covered with the
    same chance wherever it lies, so the covered parts' tokens per text byte estimate the language's, and
    only about ``sample_bytes`` (and ``_CONTEXT`` around each part) are tokenized however long the records. A record's *reach* is the inverse
    of the chance that a window meets it at all: long records are met more often, so per-record means
    weigh each by its reach."""

    def __init__(self, tok: PreTrainedTokenizerFast, stride: float, width: float) -> None:
        self.backend = tok.backend_tokenizer
        self.stride, self.width = stride, width
        self.units: list[int] = []
        self.reach: list[float] = []
        self.text: list[int] = []  # UTF-8 bytes of each record's text (0: no usable document)
        self.parts: list[tuple[str, int, int]] = []  # a covered part in context: (text, start, end)
        self.part_bytes: list[int] = []
        self.part_opens: list[bool] = []  # whether the part holds its document's start
        self.parquet_scale: list[tuple[int, int]] = []  # (text bytes, metadata bytes) of whole row groups

    def add(self, parts: Sequence[tuple[float, float]], length: float, units: int, doc: Doc | None) -> None:
        text = doc if isinstance(doc, str) else ""
        self.units.append(units)
        self.reach.append(max(self.stride / (length + self.width), 1.0))
        self.text.append(len(text.encode("utf-8")))
        for lo, hi in parts if text else ():
            start, end = round(lo * len(text)), round(hi * len(text))
            first = max(start - _CONTEXT, 0)
            self.parts.append((text[first : end + _CONTEXT], start - first, end - first))
            self.part_bytes.append(len(text[start:end].encode("utf-8")))
            self.part_opens.append(start == 0)

    def token_model(self) -> tuple[float, float]:
        """(body tokens per text byte, body tokens per document beyond those) fitted to the covered parts:
        the tokens that start in a part, tokenized with ``_CONTEXT`` characters around it so that a word
        cut at its edge counts as in the whole text. A document's start (a title, a dateline) is often
        denser than the rest: the parts that hold one tell by how much, and every document has one."""
        tokens = []
        for lo in range(0, len(self.parts), _ENCODE_BATCH):
            batch = self.parts[lo : lo + _ENCODE_BATCH]
            encoded = self.backend.encode_batch([text for text, _, _ in batch], add_special_tokens=False)
            tokens += [
                sum(a <= o < b for o, _ in e.offsets) for (_, a, b), e in zip(batch, encoded, strict=True)
            ]
        t, size = np.asarray(tokens, dtype=np.float64), np.asarray(self.part_bytes, dtype=np.float64)
        if not size.sum():
            return 0.0, 0.0
        opens = np.asarray(self.part_opens, dtype=np.float64)
        if 3 <= opens.sum() <= len(opens) - 3:
            (per_byte, per_doc), *_ = np.linalg.lstsq(np.stack([size, opens], 1), t, rcond=None)
            if per_byte > 0 and per_doc >= 0:
                return float(per_byte), float(per_doc)
        return float(t.sum() / size.sum()), 0.0

    def mean(self, values: np.ndarray) -> float:
        reach = np.asarray(self.reach)
        return float(reach @ values / reach.sum())

    def line_model(self) -> tuple[float, float]:
        """(overhead per record, record bytes per text byte) fitted to the sampled records: an id and other
        fields add about the same bytes to every record, escapes (``\\uXXXX``) a share of its text."""
        u, t = np.asarray(self.units, dtype=np.float64), np.asarray(self.text, dtype=np.float64)
        if len(u) > 2 and t.std() > 0.05 * t.mean():
            slope, overhead = np.polyfit(t, u, 1)
            if slope > 0.5 and overhead >= 0:
                return float(overhead), float(slope)
        return self.mean(u - t), 1.0


def estimate_tokens(
    source: FileSource, tok: PreTrainedTokenizerFast, sample_bytes: int = SAMPLE_BYTES
) -> tuple[int, int, bool]:
    """(tokens, documents, estimated) of a local source: exact when its files hold <= ``sample_bytes``.

    The sample is the parts of records that the windows of :func:`spread_windows` (seeded by the language's
    name) cover, about ``sample_bytes`` in all. Tokens scale with a document's *text* bytes, not with its record's (a JSON line
    also holds an id and other fields): the language's text bytes come from its bytes and records through
    the record model of the sample (:meth:`_Sample.line_model`; parquet: text against metadata bytes of the
    row groups read), and its tokens are the sample's tokens per text byte times those, plus per usable
    document its start's excess (:meth:`_Sample.token_model`) and ``<bos>``/``<eos>``.
    """
    files = [Path(f) for f in source.files()]
    extents = [file_extent(f, source.text_field) for f in files]
    if sum(units for units, _ in extents) <= sample_bytes:
        return (*measure_tokens(source, tok), False)
    sizes = [units for units, _ in extents]
    windows, stride, width = spread_windows(sizes, sample_bytes, zlib.crc32(source.name.encode()))
    sample = _Sample(tok, stride, width)
    for f, spans in windows.items():
        fmt, skips = str(file_format(files[f])), SkipCounter()
        for parts, length, raw in window_records(files[f], source.text_field, spans, sample.parquet_scale):
            sample.add(parts, length, record_bytes(raw, fmt), source.decode(f, raw, skips))
    per_text_byte, per_doc = sample.token_model()
    if not per_text_byte:  # the sample held no usable document: the rest may
        return (*measure_tokens(source, tok), False)
    overhead, per_text = sample.line_model()
    mean_units = sample.mean(np.asarray(sample.units, dtype=np.float64))
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
    good = sample.mean(np.asarray(sample.text, dtype=np.float64) > 0) * records
    tokens = per_text_byte * text + (per_doc + 2) * good
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
