"""Data pipeline throughput on the sample corpus (CPU, one process unless --workers).

Rows of the table (tokens/s counts real tokens, not padding):

- pipeline: read -> tokenize -> pack in one worker (``RowGenerator``) plus the main process's batch assembly
  and masking, in tokenizer tokens per second;
- raw encode: ``encode_batch_fast`` of the same tokenizer over exactly the documents the pipeline tokenized,
  in the same batches (single-threaded, like one dataloader worker): the bound for a text pipeline. The
  pipeline's rate should be >= 70% of it;
- pipeline + DataLoader: the same through ``MLMDataModule.train_batches`` with ``--workers`` processes;
- MDS: pre-tokenized shards of the same corpus (no tokenizer in the loop).

    python bench/bench_data.py [--seq-len 1024] [--rows 8] [--seconds 10] [--workers 2] [--join 20]

``--join 20`` merges every 20 sample documents (~60 tokens each) into one, for web-like document lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one worker = one core
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from tokenizers import Encoding, Tokenizer

from mmbert.data import FolderMix, MdsMix, MdsWriter, MLMDataModule, SampleMix
from mmbert.data.batch import assemble
from mmbert.data.rows import RowGenerator
from mmbert.data.tokenizer import load_tokenizer


class RecordingTokenizer:
    """Passes batches to the real tokenizer and keeps them, to re-encode exactly the same texts later."""

    def __init__(self, backend: Tokenizer) -> None:
        self.backend = backend
        self.batches: list[list[str]] = []
        self.tokens = 0

    def encode_batch_fast(self, texts: list[str], add_special_tokens: bool) -> list[Encoding]:
        self.batches.append(list(texts))
        out = self.backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        self.tokens += sum(len(e.ids) for e in out)
        return out


def raw_encode(backend: Tokenizer, batches: list[list[str]]) -> tuple[int, float]:
    tokens, start = 0, time.perf_counter()
    for texts in batches:
        tokens += sum(len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False))
    return tokens, time.perf_counter() - start


def pipeline(dm: MLMDataModule, seconds: float, rounds: int = 5) -> tuple[float, float | None]:
    """One worker's rows, assembled and masked as the main process does: (tokens/s, raw encode tokens/s).

    Tokens are those the tokenizer produced, for both, so the two rates compare the same work; for
    pre-tokenized data it is the real tokens of the batches and there is no raw rate. The machine is shared,
    so pipeline and raw encode alternate in ``rounds`` and each rate is the median over rounds.
    """
    dm.setup("fit")
    gen = RowGenerator(dm.pipeline, shard=0, num_shards=1)
    recorder = RecordingTokenizer(gen.backend)
    gen.backend = recorder  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    rates, raw_rates = [], []
    for _ in range(rounds):
        recorder.batches, recorder.tokens = [], 0
        real, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            rows = [gen.next_row()[0] for _ in range(dm.rows_per_device)]
            batch = assemble(rows, dm.seq_len, 0, len(dm.languages))
            dm.masker(batch["input_ids"], dm.mask_ratio, rng)
            real += batch["num_tokens"]
        elapsed = time.perf_counter() - start
        rates.append((recorder.tokens or real) / elapsed)
        if recorder.batches:
            tokens, raw_time = raw_encode(recorder.backend, recorder.batches)
            raw_rates.append(tokens / raw_time)
    return float(np.median(rates)), float(np.median(raw_rates)) if raw_rates else None


def loader(dm: MLMDataModule, seconds: float) -> float:
    it = dm.train_batches()
    next(it)  # worker start-up is not throughput
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tokens += next(it)["num_tokens"]
    return tokens / (time.perf_counter() - start)


def write_mds(mix: SampleMix | FolderMix, out: Path) -> None:
    tok = load_tokenizer("data/tokenizer")
    for lang in mix.languages:
        texts = mix.train_source(lang).first_docs(10**9)
        with MdsWriter(out / lang, {"input_ids": "ndarray:uint32", "id": "str"}) as w:
            for i, enc in enumerate(tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)):
                w.write(
                    {
                        "input_ids": np.asarray([tok.bos_token_id, *enc.ids], dtype=np.uint32),
                        "id": f"{lang}-{i}",
                    }
                )


def joined_corpus(mix: SampleMix, join: int, out: Path) -> FolderMix:
    """The sample with every ``join`` consecutive documents merged: FineWeb2-like lengths (~1k tokens)."""
    for lang in mix.languages:
        docs = mix.train_source(lang).first_docs(10**9)
        folder = out / lang / "train"
        folder.mkdir(parents=True)
        with open(folder / "000.jsonl", "w", encoding="utf-8") as f:
            for lo in range(0, len(docs), join):
                f.write(json.dumps({"text": "\n\n".join(docs[lo : lo + join])}, ensure_ascii=False) + "\n")
    return FolderMix(str(out), tokenizer="data/tokenizer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--join", type=int, default=0, help="merge this many sample documents into one (0: no)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    mix: SampleMix | FolderMix = SampleMix(subset="decay-all")
    if args.join > 1:
        mix = joined_corpus(mix, args.join, tmp / "joined")
    common = {"seq_len": args.seq_len, "rows_per_device": args.rows, "tau": 0.5, "mask_ratio": 0.3}
    common["val_docs_per_lang"] = 0
    texts = sum(len(mix.train_source(lang).first_docs(10**9)) for lang in mix.languages)

    results: dict[str, float] = {}
    results["pipeline, 1 worker"], raw = pipeline(MLMDataModule(mix, **common), args.seconds)
    assert raw is not None
    results["raw encode, the same documents"] = raw
    dm = MLMDataModule(mix, num_workers=args.workers, **common)
    results[f"pipeline + DataLoader, {args.workers} workers"] = loader(dm, args.seconds)
    write_mds(mix, tmp / "mds")
    mds = MdsMix(str(tmp / "mds"), tokenizer="data/tokenizer")
    results["MDS pre-tokenized, 1 worker"] = pipeline(MLMDataModule(mds, **common), args.seconds)[0]

    print(f"\nseq_len {args.seq_len}, {args.rows} rows per batch, {texts} documents, {os.cpu_count()} CPUs")
    print(f"{'path':<42} {'tokens/s':>12} {'vs raw encode':>14}")
    for name, value in results.items():
        print(f"{name:<42} {value:>12,.0f} {value / raw:>13.0%}")
    print("(DataLoader and MDS rows count every real token of the batches, <bos>/<eos> included)")


if __name__ == "__main__":
    main()
