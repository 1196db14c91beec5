"""Packed rows -> the masked micro-batches of one optimizer step, and the stream position that resumes them.

Training batches are assembled in the main process: dataloader workers yield packed rows
(:class:`mmbert.data.rows.PackedRowDataset`), and :class:`TrainStream` takes this device's rows of a step,
cuts them into micro-batches of at most ``rows_per_device`` rows (full ones first, the remainder last),
concatenates and masks each one. Rows are taken in the DataLoader's round-robin worker order; per worker it
keeps the latest snapshot handed over and the rows consumed since, which with the masking RNG and the
realised tokens is the whole position (:meth:`TrainStream.state`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from mmbert.data.batch import StepBatch, assemble, split_rows
from mmbert.data.masking import Masker
from mmbert.data.resume import portable
from mmbert.data.rows import PackedRowDataset, PipelineConfig, identity
from mmbert.data.workers import die_with_parent
from mmbert.hub import STATS


def mask_rng(seed: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, rank, 0x6D61736B])


class TrainStream:
    """This rank's training rows, batches and position. ``generation`` counts (re)opened row streams."""

    def __init__(self, languages: Sequence[str], seed: int, rank: int) -> None:
        self.workers: dict[int, dict[str, Any]] = {}
        self.rows_consumed = 0
        self.realised = dict.fromkeys(languages, 0)
        self.mask_rng = mask_rng(seed, rank)
        self.generation = 0
        self._rows: Iterator[dict[str, Any]] | None = None
        self.in_process = True  # rows made in this process (no dataloader workers)
        self.wait_s = 0.0  # seconds spent waiting for rows, since the last call of take_wait
        self._worker_hub: dict[int, dict[str, float]] = {}  # latest Hub counts of each live worker
        self._closed_hub: Counter[str] = Counter()  # those of the workers of earlier generations

    def drop(self, languages: Sequence[str]) -> None:
        for lang in languages:
            self.realised.pop(lang, None)

    def open(self, cfg: PipelineConfig, rank: int, world_size: int, num_workers: int, prefetch: int) -> int:
        """(Re)starts the row stream from the consumed position; returns the new generation."""
        workers = max(num_workers, 1)
        dataset = PackedRowDataset(
            cfg,
            rank,
            world_size,
            num_workers,
            worker_offset=self.rows_consumed % workers,
            resume=dict(self.workers),
        )
        loader = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=identity,
            prefetch_factor=prefetch if num_workers else None, worker_init_fn=die_with_parent,
        )  # fmt: skip
        for counts in self._worker_hub.values():
            self._closed_hub.update(counts)
        self._worker_hub = {}
        self.in_process = num_workers == 0
        self._rows = iter(loader)
        self.generation += 1
        return self.generation

    def take_rows(self, n: int) -> list[Any]:
        assert self._rows is not None
        rows = []
        for _ in range(n):
            start = time.perf_counter()
            item = next(self._rows)
            self.wait_s += time.perf_counter() - start
            w = item["worker"]
            self._worker_hub[w] = item["hub"]
            prev = self.workers.get(w)
            snapshot = item["snapshot"] if item["snapshot"] is not None else (prev or {}).get("snapshot")
            if snapshot is None or (item["snapshot"] is None and prev["snapshot_id"] != item["snapshot_id"]):
                raise RuntimeError(f"row stream out of order: worker {w} snapshot {item['snapshot_id']}")
            self.workers[w] = {
                "snapshot": snapshot,
                "snapshot_id": item["snapshot_id"],
                "since": item["since"],
            }
            self.rows_consumed += 1
            rows.append(item["row"])
        return rows

    def take_wait(self) -> float:
        """Seconds spent waiting for rows since the last call (the data loader stalling the step)."""
        wait, self.wait_s = self.wait_s, 0.0
        return wait

    def hub_stats(self) -> dict[str, float]:
        """This rank's Hub retries by kind (``retries/<kind>``) and seconds waiting on the Hub (``wait_s``):
        its own calls plus those of its dataloader workers, past and present."""
        total: Counter[str] = Counter(STATS.snapshot())
        if not self.in_process:
            total.update(self._closed_hub)
            for counts in self._worker_hub.values():
                total.update(counts)
        return dict(total)

    def micro_batch(
        self,
        n_rows: int,
        seq_len: int,
        pad_id: int,
        masker: Masker,
        mask_ratio: float,
        languages: Sequence[str],
    ) -> dict[str, Any]:
        batch = assemble(self.take_rows(n_rows), seq_len, pad_id, len(languages))
        batch["input_ids"], batch["labels"] = masker(batch["input_ids"], mask_ratio, self.mask_rng)
        for lang, n in zip(languages, batch["lang_tokens"].tolist(), strict=True):
            self.realised[lang] += n
        return batch

    def step(self, device_rows: int, micro_rows: int, **batch_args: Any) -> StepBatch:
        return StepBatch([self.micro_batch(n, **batch_args) for n in split_rows(device_rows, micro_rows)])

    def state(self) -> dict[str, Any]:
        return {
            "rows_consumed": self.rows_consumed,
            "workers": portable(self.workers, to_torch=True),
            "mask_rng": self.mask_rng.bit_generator.state,
            "realised_tokens": dict(self.realised),
        }

    def load(self, st: dict[str, Any]) -> None:
        self.workers = {int(k): portable(v, to_torch=False) for k, v in st["workers"].items()}
        self.rows_consumed = st["rows_consumed"]
        self.mask_rng.bit_generator.state = st["mask_rng"]
        self.realised = dict(st["realised_tokens"])
        self.generation += 1  # pending batches of an older iterator must not be used
        self._rows = None
