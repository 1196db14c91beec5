"""``mmbert-prepare`` throughput against the raw tokenizer on every core.

The corpus: the sample's documents joined ``--join`` at a time (web-like lengths, ~1k tokens), repeated to
``--mb`` MB of JSON lines in ``--files`` files, each line's text made unique. The reference is one core's
raw ``encode_batch_fast`` rate (one thread, batches of 512, no special tokens) on the same documents, an
evenly spread ``1 / workers`` of the files (as many documents as one worker tokenizes), times the workers;
it is measured before and after the run and averaged. ``prepare`` is timed end to end (pool start, reading,
tokenizing, writing shards, counts): its tokens/s over the reference is the ratio (goal: >= 85%). On a shared
machine the workers get less than a core each, so the last rows also compare against ``workers`` raw
encoding processes running at once over all the documents, and per CPU second (the CPU time of the run and
of its workers against one encoding thread's), which contention does not change much.

    python bench/bench_prepare.py [--workers N (default: every core)] [--mb 64] [--files 32] [--join 16]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core: the reference is per core
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.cli.prepare import parse_args
from mmbert.data import SampleMix
from mmbert.data.prepare import prepare
from mmbert.data.tokenizer import load_tokenizer


def write_corpus(root: Path, mb: float, files: int, join: int) -> list[list[str]]:
    docs = SampleMix(subset="decay-all").train_source("eng_Latn").first_docs(10**9)
    joined = [" ".join(docs[i : i + join]) for i in range(0, len(docs), join)]
    per_file = int(mb * 1e6 / files)
    folder = root / "eng_Latn" / "train"
    folder.mkdir(parents=True)
    texts: list[list[str]] = []
    k = 0
    for f in range(files):
        lines, size, mine = [], 0, []
        while size < per_file:
            text = f"{k} {joined[k % len(joined)]}"
            k += 1
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            lines.append(line)
            mine.append(text)
            size += len(line.encode())
        (folder / f"{f:05d}.jsonl").write_text("".join(lines))
        texts.append(mine)
    return texts


def raw_rate(tokenizer: str, texts: list[str], batch: int = 512) -> tuple[float, float]:
    """(tokens per second of wall time, tokens per CPU second) of one thread encoding ``texts``."""
    backend = load_tokenizer(tokenizer).backend_tokenizer
    tokens, start, cpu = 0, time.perf_counter(), time.process_time()
    for lo in range(0, len(texts), batch):
        enc = backend.encode_batch_fast(texts[lo : lo + batch], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in enc)
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _raw_share(args: tuple[str, list[str]]) -> tuple[int, float]:
    tokenizer, texts = args
    backend = load_tokenizer(tokenizer).backend_tokenizer
    tokens, start = 0, time.perf_counter()
    for lo in range(0, len(texts), 512):
        tokens += sum(
            len(e.ids) for e in backend.encode_batch_fast(texts[lo : lo + 512], add_special_tokens=False)
        )
    return tokens, time.perf_counter() - start


def concurrent_raw(tokenizer: str, texts: list[list[str]], workers: int) -> float:
    """``workers`` processes encoding their share of the files at once: the reference under the same
    contention as the run (on a shared machine one core alone is faster than each of several)."""
    shares = [
        (tokenizer, [t for f in range(w, len(texts), workers) for t in texts[f]]) for w in range(workers)
    ]
    start = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        done = pool.map(_raw_share, shares)
    return sum(t for t, _ in done) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mb", type=float, default=64.0)
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--join", type=int, default=16)
    ap.add_argument("--tokenizer", default="data/tokenizer")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        texts = write_corpus(Path(tmp) / "src", args.mb, args.files, args.join)
        step = max(args.files // args.workers, 1)
        subset = [t for f in range(0, args.files, step) for t in texts[f]][
            : sum(map(len, texts)) // args.workers
        ]
        before, cpu_before = raw_rate(args.tokenizer, subset)
        start, cpu = time.perf_counter(), cpu_seconds()
        counts = prepare(
            parse_args(
                [
                    f"source={tmp}/src",
                    f"out={tmp}/out",
                    f"tokenizer={args.tokenizer}",
                    f"workers={args.workers}",
                ]
            )
        )
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        after, cpu_after = raw_rate(args.tokenizer, subset)
        together = concurrent_raw(args.tokenizer, texts, args.workers)
    body_tokens = counts["eng_Latn"]["tokens"] - 2 * counts["eng_Latn"]["docs"]  # what the tokenizer produced
    rate = body_tokens / seconds
    one_core = (before + after) / 2
    reference = one_core * args.workers
    rows = [
        ("raw encode_batch_fast, one core (before / after)", f"{before:,.0f} / {after:,.0f} tokens/s"),
        (f"reference: {args.workers} x one core", f"{reference:,.0f} tokens/s"),
        (
            f"prepare, {args.workers} workers, {args.mb:g} MB, {body_tokens:,} tokens",
            f"{rate:,.0f} tokens/s ({seconds:.1f} s)",
        ),
        ("prepare / reference", f"{rate / reference:.0%}"),
        (
            f"raw encode_batch_fast, {args.workers} processes at once, all documents",
            f"{together:,.0f} tokens/s",
        ),
        ("prepare / that (same contention)", f"{rate / together:.0%}"),
        ("raw encode, tokens per CPU second (before / after)", f"{cpu_before:,.0f} / {cpu_after:,.0f}"),
        (f"prepare, tokens per CPU second ({cpu:.1f} CPU s)", f"{body_tokens / cpu:,.0f}"),
        ("prepare / raw, per CPU second", f"{body_tokens / cpu / ((cpu_before + cpu_after) / 2):.0%}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
