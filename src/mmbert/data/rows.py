"""The training stream of one shard (rank x dataloader worker): sample -> read -> tokenize -> pack.

:class:`RowGenerator` yields packed rows. For exact resumption it takes a *snapshot* of its whole state every
``snapshot_every`` rows (at a point where no tokenized document waits outside the packer, so the snapshot is
just stream positions, the sampler's RNG and statistics, and the packer's pending chunks). Every row carries
the id of the latest snapshot and how many rows were produced since; the first row after a snapshot also
carries the snapshot itself. Restoring a snapshot and replaying that many rows reproduces the stream exactly.

:class:`PackedRowDataset` runs one generator per dataloader worker. The main process consumes rows in the
DataLoader's round-robin worker order; ``worker_offset`` rotates logical worker ids so that after a restart
the first row again comes from the worker whose turn it was.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from mmbert.data.doc_stream import DocStream
from mmbert.data.mix.base import Source
from mmbert.data.packing import BestFitPacker, Row, frame_documents
from mmbert.data.sampling import TokenSampler
from mmbert.data.tokenizer import load_tokenizer, tokenize_documents
from mmbert.hub import STATS


@dataclass(frozen=True)
class PipelineConfig:
    sources: tuple[Source, ...]
    weights: tuple[float, ...]
    tokenizer: str
    seq_len: int
    seed: int
    bos_id: int
    eos_id: int
    buffer_size: int = 32  # pending chunks the packer chooses from
    tokenize_batch: int = 64  # documents tokenized per call
    block_size: int = 256  # records per read block (the shuffle unit)
    snapshot_every: int = 128  # rows between snapshots (the most rows a resume replays)
    # Known tokens per document of each source (None: unknown), so the first draws are length-corrected.
    mean_doc_tokens: tuple[float | None, ...] = ()


class RowGenerator:
    def __init__(
        self, cfg: PipelineConfig, shard: int, num_shards: int, resume: dict[str, Any] | None = None
    ) -> None:
        self.cfg, self.shard, self.num_shards = cfg, shard, num_shards
        self.backend = load_tokenizer(cfg.tokenizer).backend_tokenizer
        snapshot = resume["snapshot"] if resume else None
        self._stream_states: dict[str, dict[str, Any]] = dict(snapshot["streams"]) if snapshot else {}
        self.streams: dict[int, DocStream] = {}
        sampler_state = snapshot["sampler"] if snapshot else None
        self.sampler = TokenSampler(
            cfg.weights,
            (cfg.seed, shard, 0x6D6D),
            sampler_state,
            cfg.mean_doc_tokens or None,
            shard,
            num_shards,
        )
        self.packer = BestFitPacker(cfg.seq_len)
        if snapshot:
            self.packer.pending = [(lang, np.asarray(c, dtype=np.int32)) for lang, c in snapshot["pending"]]
        self.queue: deque[tuple[int, np.ndarray]] = deque()
        self.snapshot_id = resume["snapshot_id"] if resume else -1
        self.since = 0
        self._fresh: dict[str, Any] | None = None
        for _ in range(resume["since"] if resume else 0):  # replay the rows already consumed
            self.next_row()
        self._fresh = None

    def _stream(self, i: int) -> DocStream:
        if i not in self.streams:
            src = self.cfg.sources[i]
            state = self._stream_states.get(src.name)
            cfg = self.cfg
            self.streams[i] = DocStream(src, self.shard, self.num_shards, cfg.seed, cfg.block_size, state)
        return self.streams[i]

    def _snapshot(self) -> dict[str, Any]:
        streams = dict(self._stream_states)
        streams.update({self.cfg.sources[i].name: s.state() for i, s in self.streams.items()})
        return {"streams": streams, "sampler": self.sampler.state(), "pending": list(self.packer.pending)}

    def _refill(self) -> None:
        if self.snapshot_id < 0 or self.since >= self.cfg.snapshot_every:
            self.snapshot_id += 1
            self.since = 0
            self._fresh = self._snapshot()
        picks = self.sampler.draw(self.cfg.tokenize_batch).tolist()
        docs = [self._stream(i).next_doc() for i in picks]
        bodies = tokenize_documents(self.backend, docs)
        framed = frame_documents(bodies, self.cfg.seq_len, self.cfg.bos_id, self.cfg.eos_id)
        for i, chunks in zip(picks, framed, strict=True):
            self.sampler.observe(i, sum(len(c) for c in chunks))
            self.queue.extend((i, c) for c in chunks)

    def next_row(self) -> tuple[Row, dict[str, Any] | None]:
        """The next row and, if one was taken just before it, the snapshot to hand to the main process."""
        while len(self.packer) < self.cfg.buffer_size:
            if not self.queue:
                self._refill()
            self.packer.add(*self.queue.popleft())
        row = self.packer.pop_row()
        self.since += 1
        fresh, self._fresh = self._fresh, None
        return row, fresh


def identity(x: Any) -> Any:
    return x


class PackedRowDataset(IterableDataset):
    """Infinite stream of ``{"worker", "shard", "row", "snapshot", "snapshot_id", "since", "hub"}`` items;
    ``hub`` is the worker's Hub retries and waiting since it started (:data:`mmbert.hub.STATS`)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        rank: int,
        world_size: int,
        num_workers: int,
        worker_offset: int = 0,
        resume: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.num_workers, self.worker_offset = max(num_workers, 1), worker_offset
        self.resume = resume or {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is not None:
            # Rayon threads in every worker would oversubscribe the cores the workers already use.
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        worker = ((info.id if info else 0) + self.worker_offset) % self.num_workers
        shard = self.rank * self.num_workers + worker
        gen = RowGenerator(self.cfg, shard, self.world_size * self.num_workers, self.resume.get(worker))
        start = STATS.snapshot()  # a forked worker inherits the main process's counts
        while True:
            row, snapshot = gen.next_row()
            now = STATS.snapshot()
            yield {
                "worker": worker, "shard": shard, "row": row, "snapshot": snapshot,
                "snapshot_id": gen.snapshot_id, "since": gen.since,
                "hub": {k: v - start.get(k, 0.0) for k, v in now.items()},
            }  # fmt: skip
