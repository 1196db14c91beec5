"""Raw text -> pre-tokenized MDS shards, as mmBERT's released training data is laid out (the command line
is :mod:`mmbert.cli.prepare`; the settings are :class:`PrepareConfig`).

``source`` is a FineWeb2-layout folder (``{iso}_{Script}/train/*``: every language, or ``languages``), a
folder of data files of one language (``.parquet``, ``.jsonl[.gz|.zst]``, ``.txt``; named ``name``, default
the folder's name) or ``hub:REPO`` (a hub dataset, listed once and read by range requests at one commit,
:mod:`mmbert.hub`; one config per entry of ``languages``, split ``split``). ``tokenizer`` is any tokenizer :func:`mmbert.data.load_tokenizer` loads.

What it writes under ``out`` (read by ``data_mix=mds data_mix.path=OUT`` and by ``mosaicml-streaming``):

- ``<lang>/<part>/index.json`` + ``shard.NNNNN.mds[.zstd]``: one part per input file (the release's
  ``train/<source>/<chunk-folder>/`` layout), columns ``input_ids`` (``ndarray:uint32``) and ``id``
  (``str``: ``<lang>/<part>/<record>[.<chunk>]``); ``<lang>/index.json`` merges the language's parts;
- a record per usable document, framed as the release and training expect: ``<bos>`` then its tokens, no
  ``<eos>`` (the reader strips both if present, and the pipeline frames every chunk ``<bos> ... <eos>``);
  with ``chunk=N`` (the release: 8192) a document becomes records of at most ``N`` tokens, each starting
  with ``<bos>``;
- ``mmbert_prepare.json``: the settings the parts were written with (a rerun with others is refused);
- ``mmbert_token_counts.json``: each language's exact tokens and documents, as ``data_mix=mds`` counts them
  (body + ``<bos>``/``<eos>`` per record), so neither training nor the mixture plan counts again.

Every core works (``workers``, default all): each input file is one task of a process pool, tokenized in
batches of ``batch`` documents with one thread per process. A progress bar shows input bytes, documents,
tokens/s and the ETA. Resumable: a part is written to ``<lang>/.<part>.tmp`` and renamed when complete, so a
run killed at any moment (even ``SIGKILL``) and started again redoes only unfinished parts and ends with
every usable document exactly once; the pool's processes die with the run (:mod:`mmbert.data.workers`).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mmbert.data.counts import (
    MDS_KEY,
    CountCache,
    file_extent,
    record_bytes,
    tokenizer_fingerprint,
)
from mmbert.data.langcodes import normalize_language
from mmbert.data.mds import MdsWriter, merge_index
from mmbert.data.mix.base import Source
from mmbert.data.mix.folder import FileSource
from mmbert.data.mix.hub import HubSource
from mmbert.data.mix.layout import data_files, discover_languages, has_language_folders
from mmbert.data.paths import output_path, resolve_path
from mmbert.data.readers import SkipCounter, file_format
from mmbert.data.tokenizer import encode_bodies, load_tokenizer
from mmbert.data.workers import die_with_parent
from mmbert.errors import DataError

log = logging.getLogger(__name__)

COLUMNS = {"input_ids": "ndarray:uint32", "id": "str"}
PARTS_DONE = "counts.json"  # written last inside a part: the part's tokens and documents
SETTINGS = "mmbert_prepare.json"  # how the parts under out/ were written


@dataclass
class PrepareConfig:
    source: str = "???"
    out: str = "???"
    tokenizer: str = "data/tokenizer"
    workers: int = 0  # 0: every core
    chunk: int = 0  # 0: one record per document; else at most this many tokens per record (<bos> included)
    compression: str | None = None  # None | zstd
    languages: list[str] | None = None
    name: str | None = None
    text_field: str = "text"
    split: str = "train"
    size_limit: int = 1 << 26  # bytes per shard, as mosaicml-streaming's default
    batch: int = 512  # documents per encode_batch call
    read_block: int = 1024  # records read at once


@dataclass(frozen=True)
class Task:
    """One input file of one language -> one part folder."""

    lang: str
    part: int
    source: Source
    file_idx: int


# -------------------------------------------------------------------------------------------- sources
def sources(cfg: PrepareConfig) -> dict[str, Source]:
    """The sources ``cfg.source`` names, by language."""
    if cfg.source.startswith("hub:"):
        repo = cfg.source[4:]
        if not cfg.languages:
            raise DataError("source=hub:REPO needs languages=[config,...] (e.g. [rus_Cyrl])")
        return {lang: HubSource(lang, repo, [lang], cfg.split, cfg.text_field) for lang in cfg.languages}
    root = resolve_path(cfg.source)
    if not root.is_dir():
        raise DataError(f"source {root} is not a folder (or hub:REPO)")
    if not has_language_folders(root):
        files = data_files(root)
        if not files:
            raise DataError(f"{root} holds no language folders ({{iso}}_{{Script}}/train/) and no data files")
        name = cfg.name or normalize_language(root.name) or root.name
        return {name: FileSource(name, files, cfg.text_field)}
    folders = discover_languages(root)
    wanted = cfg.languages or list(folders)
    unknown = [lang for lang in wanted if normalize_language(lang) not in folders]
    if unknown:
        raise DataError(f"languages {unknown} not in {root} (have {sorted(folders)})")
    out = {}
    for lang in map(normalize_language, wanted):
        files = data_files(folders[lang] / cfg.split)
        if not files:
            raise DataError(f"{folders[lang] / cfg.split} holds no data files (split={cfg.split!r})")
        out[lang] = FileSource(lang, files, cfg.text_field)
    return out


# ----------------------------------------------------------------------------------------- one task
_TOK: Any = None


def _init_worker(tokenizer: str) -> None:
    global _TOK
    die_with_parent()  # a killed driver leaves no worker tokenizing for nobody
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per process: the pool uses the others
    _TOK = load_tokenizer(tokenizer)


def _records(task: Task, cfg: PrepareConfig) -> Iterator[tuple[int, int, Any]]:
    """(record index, input bytes, document or None) of the task's file, in order."""
    src, skips = task.source, SkipCounter()
    fmt = file_format(src.files()[task.file_idx]) if isinstance(src, FileSource) else None
    for block in src.blocks(task.file_idx, None, cfg.read_block):
        for i, raw in enumerate(block.raws, block.first_record):
            size = record_bytes(raw, fmt) if fmt else 0
            yield i, size, src.decode(task.file_idx, raw, skips)
    if skips:
        log.warning(skips.summary(src.files()[task.file_idx]))


def _framed(ids: list[int], bos: int, chunk: int) -> list[np.ndarray]:
    body = chunk - 1 if chunk else len(ids)
    return [np.asarray([bos, *ids[lo : lo + body]], dtype=np.uint32) for lo in range(0, len(ids), body)]


def part_dir(out: Path, task: Task) -> Path:
    return out / task.lang / f"{task.part:05d}"


def run_task(task: Task, cfg: PrepareConfig, progress: Any = None) -> tuple[str, int, int]:
    """Writes one part (to a temporary folder, renamed when complete); (language, tokens, documents)."""
    tok = _TOK or load_tokenizer(cfg.tokenizer)
    bos = tok.bos_token_id
    out = output_path(cfg.out)
    final = part_dir(out, task)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # what a killed run left
    tokens = docs = 0
    pending: list[tuple[int, str]] = []
    seen_bytes = 0

    with MdsWriter(tmp, COLUMNS, cfg.size_limit, cfg.compression) as writer:

        def flush() -> None:
            nonlocal tokens, docs, seen_bytes
            encoded = encode_bodies(tok.backend_tokenizer, [d for _, d in pending])
            n_docs = n_tokens = 0
            for (rec, _), ids in zip(pending, encoded, strict=True):
                if not ids:  # no token at all: not a usable document (the reader would skip it)
                    continue
                pieces = _framed(ids, bos, cfg.chunk)
                for k, piece in enumerate(pieces):
                    suffix = f".{k}" if len(pieces) > 1 else ""
                    writer.write({"input_ids": piece, "id": f"{task.lang}/{task.part:05d}/{rec}{suffix}"})
                    n_tokens += len(piece) + 1  # as MdsSource + the pipeline count: <bos> body <eos>
                n_docs += len(pieces)
            tokens, docs = tokens + n_tokens, docs + n_docs
            if progress is not None:
                progress.put((seen_bytes, len(pending), n_tokens))
            seen_bytes = 0
            pending.clear()

        for rec, size, doc in _records(task, cfg):
            seen_bytes += size
            if isinstance(doc, str):  # text sources only
                pending.append((rec, doc))
                if len(pending) >= cfg.batch:
                    flush()
        flush()
    (tmp / PARTS_DONE).write_text(json.dumps({"tokens": tokens, "docs": docs}) + "\n")
    os.replace(tmp, final)  # atomic: a part exists complete or not at all
    return task.lang, tokens, docs


def _run_task(args: tuple[Task, PrepareConfig, Any]) -> tuple[str, int, int]:
    return run_task(*args)


# --------------------------------------------------------------------------------------------- driver
def part_counts(out: Path, lang: str) -> tuple[int, int]:
    tokens = docs = 0
    for done in sorted((out / lang).glob(f"[0-9]*/{PARTS_DONE}")):
        c = json.loads(done.read_text())
        tokens, docs = tokens + c["tokens"], docs + c["docs"]
    return tokens, docs


def finish_language(out: Path, lang: str, cache: CountCache) -> None:
    """The language's merged ``index.json`` and its counts in the cache (as ``data_mix=mds`` keys them)."""
    merge_index(out / lang)
    shards = []
    for index in sorted((out / lang).glob("[0-9]*/index.json")):
        for s in json.loads(index.read_text())["shards"]:
            info = s["zip_data"] or s["raw_data"]
            shards.append(str(index.parent / info["basename"]))
    tokens, docs = part_counts(out, lang)
    cache.put(MDS_KEY, lang, shards, tokens, docs)


def _check_settings(out: Path, cfg: PrepareConfig, tok_key: str) -> None:
    """Parts done by an earlier run are reused only if they were written the same way."""
    settings = {"tokenizer": tok_key, "chunk": cfg.chunk, "compression": cfg.compression,
                "text_field": cfg.text_field, "split": cfg.split}  # fmt: skip
    path = out / SETTINGS
    if path.exists():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise DataError(
                f"{out} holds shards prepared with other settings ({what}): use another out= or delete it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1) + "\n")


def _check(cfg: PrepareConfig) -> None:
    for key in ("source", "out"):
        if getattr(cfg, key) in ("???", "", None):
            raise DataError(f"{key}= is required")
    if cfg.compression not in (None, "zstd"):
        raise DataError(f"compression must be null or zstd, got {cfg.compression!r}")
    if cfg.chunk and cfg.chunk < 2:
        raise DataError(f"chunk must be 0 (whole documents) or >= 2 tokens, got {cfg.chunk}")
    for key in ("workers", "size_limit", "batch", "read_block"):
        if getattr(cfg, key) < (0 if key == "workers" else 1):
            raise DataError(f"{key} must be >= {0 if key == 'workers' else 1}, got {getattr(cfg, key)}")


def prepare(cfg: PrepareConfig) -> dict[str, dict[str, int]]:
    """Writes the shards of every source; ``{lang: {"tokens", "docs"}}``."""
    _check(cfg)
    tok = load_tokenizer(cfg.tokenizer)  # fails here, not in a worker, for a bad name
    out = output_path(cfg.out)
    srcs = sources(cfg)
    _check_settings(out, cfg, tokenizer_fingerprint(tok))
    tasks = [Task(lang, f, src, f) for lang, src in srcs.items() for f in range(len(src.files()))]
    todo = [t for t in tasks if not (part_dir(out, t) / PARTS_DONE).exists()]
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(todo), 1))
    sizes = {t: _input_bytes(t, cfg) for t in tasks}
    done_bytes = sum(sizes[t] for t in tasks if t not in todo)
    log.info("prepare: %d languages, %d files (%d done before), %d workers", len(srcs), len(tasks),
             len(tasks) - len(todo), workers)  # fmt: skip
    bar = tqdm(total=sum(sizes.values()), initial=done_bytes, unit="B", unit_scale=True, desc="prepare",
               dynamic_ncols=True, file=sys.stderr)  # fmt: skip
    if todo:
        _run_pool(todo, cfg, workers, bar, sizes)
    bar.close()
    cache = CountCache(out)
    for lang in srcs:
        finish_language(out, lang, cache)
    cache.save()
    return {lang: dict(zip(("tokens", "docs"), part_counts(out, lang), strict=True)) for lang in srcs}


def _input_bytes(task: Task, cfg: PrepareConfig) -> int:
    if not isinstance(task.source, FileSource):
        return 0
    path = Path(task.source.files()[task.file_idx])
    return file_extent(path, cfg.text_field)[0] if file_format(path) != "txt" else path.stat().st_size


def _run_pool(todo: list[Task], cfg: PrepareConfig, workers: int, bar: Any, sizes: dict[Task, int]) -> None:
    # fork: workers start in milliseconds (spawn re-imports torch); the parent has tokenized nothing
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    # The manager serves the progress queue for ever unless told to stop: it too must die with the driver.
    manager = SyncManager(ctx=ctx)
    manager.start(die_with_parent)
    progress = manager.Queue()
    docs = tokens = 0
    start = time.perf_counter()

    def drain() -> None:
        nonlocal docs, tokens
        while not progress.empty():
            b, d, t = progress.get()
            bar.update(b)
            docs, tokens = docs + d, tokens + t
        rate = tokens / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"{docs:,} docs, {tokens:,} tokens, {rate / 1e3:,.0f}k tokens/s")

    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg.tokenizer,)) as pool:
        results = pool.imap_unordered(_run_task, [(t, cfg, progress) for t in todo])
        pending = len(todo)
        while pending:
            try:
                results.next(timeout=0.5)
                pending -= 1
            except mp.TimeoutError:
                pass
            drain()
    drain()
    manager.shutdown()
