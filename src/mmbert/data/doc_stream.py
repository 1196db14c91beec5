"""One source's documents as one shard (rank x dataloader worker) sees them: epochs, shuffling, sharding.

Sharding is deterministic and disjoint: with at least as many files as shards, shard ``g`` owns in its
epoch ``e`` the files ``f`` with ``(f + e) mod G == g`` (in epoch 0: ``g, g + G, ...``); otherwise every shard
reads every file and keeps the records whose index in the file is ``g mod G``. Together the shards see every
document of the source exactly once per epoch. The rotation matters when the files do not divide evenly
(10 files over 8 shards): shards draw the language at the same token rate, so a shard owning two files would
read each half as often as a shard owning one. Rotated, every file visits every shard once in ``G``
consecutive epochs, so each shard reads the whole source once per ``G`` epochs and every file is drawn at
its share of the source's tokens. A shard that owns no documents (a source smaller than the number of
shards, or ``G`` epochs in a row without a usable document) falls back to reading the whole source, with a
warning, rather than stalling.

Shuffling is reseeded per epoch: the file order, and the records inside each block of ``block_size``
records, are permuted with seeds derived from (seed, source name, epoch, shard, file, block). The state is
only positions (epoch, file, block cursor, offset in the block), so resuming re-reads one block.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from mmbert.data.mix.base import Doc, Source
from mmbert.data.readers import Block, SkipCounter
from mmbert.errors import DataError

log = logging.getLogger(__name__)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


class DocStream:
    def __init__(
        self,
        source: Source,
        shard: int,
        num_shards: int,
        seed: int,
        block_size: int = 256,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.source, self.shard, self.num_shards = source, shard, num_shards
        self.seed, self.block_size = seed, block_size
        self._key = zlib.crc32(source.name.encode())
        st = state or {}
        self.epoch: int = st.get("epoch", 0)
        self.pos: int = st.get("pos", 0)  # index into this epoch's file order
        self.cursor: Any = st.get("cursor")  # start of the current block (None: start of the file)
        self.in_block: int = st.get("in_block", 0)  # documents of the current block already returned
        self.docs_in_epoch: int = st.get("docs_in_epoch", 0)
        self.replicated: bool = st.get("replicated", False)
        self.empty_epochs: int = st.get("empty_epochs", 0)  # consecutive epochs without a usable document
        self._blocks: Iterator[Block] | None = None
        self._docs: list[Any] = []
        self._next = 0
        self._skips = SkipCounter()
        self._order = self._file_order()

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "pos": self.pos, "cursor": self.cursor, "in_block": self.in_block,
            "docs_in_epoch": self.docs_in_epoch, "replicated": self.replicated,
            "empty_epochs": self.empty_epochs,
        }  # fmt: skip

    @property
    def _by_file(self) -> bool:
        return not self.replicated and len(self.source.files()) >= self.num_shards

    def _file_order(self) -> list[int]:
        n = len(self.source.files())
        if n == 0:
            raise DataError(f"source {self.source.name!r} has no files")
        if self._by_file:
            first = (self.shard - self.epoch) % self.num_shards
            files = list(range(first, n, self.num_shards))
        else:
            files = list(range(n))
        perm = _rng(self.seed, self._key, self.epoch, self.shard).permutation(len(files))
        return [files[i] for i in perm]

    def _selected(self, file_idx: int, block: Block) -> list[Any]:
        """This shard's raw records of a block, shuffled."""
        idx = np.arange(block.first_record, block.first_record + len(block.raws))
        keep = np.ones(len(idx), dtype=bool)
        if not self._by_file and not self.replicated:
            keep &= idx % self.num_shards == self.shard
        if file_idx == 0 and self.source.holdout:
            keep &= idx >= self.source.holdout
        chosen = np.flatnonzero(keep)
        rng = _rng(self.seed, self._key, self.epoch, self.shard, file_idx, block.ordinal)
        perm = rng.permutation(len(chosen))
        return [block.raws[i] for i in chosen[perm]]

    def _finish_file(self) -> None:
        if self._skips:
            log.warning(self._skips.summary(self.source.files()[self._order[self.pos]]))
            self._skips = SkipCounter()
        self._blocks, self.cursor, self.in_block = None, None, 0
        self.pos += 1

    def _finish_epoch(self) -> None:
        self.empty_epochs = 0 if self.docs_in_epoch else self.empty_epochs + 1
        # By file, another epoch reads other files: only G empty epochs in a row mean the shard owns nothing.
        if self._by_file and 0 < self.empty_epochs < self.num_shards:
            self.epoch += 1
        elif self.docs_in_epoch == 0:
            if self.replicated:
                files = self.source.files()
                raise DataError(f"source {self.source.name!r} has no usable documents in {files}")
            log.warning(
                "source %r: shard %d of %d owns no documents; it reads the whole source instead",
                self.source.name, self.shard, self.num_shards,
            )  # fmt: skip
            self.replicated = True
            self.empty_epochs = 0
        else:
            self.epoch += 1
        self.pos, self.docs_in_epoch, self.cursor, self.in_block = 0, 0, None, 0
        self._order = self._file_order()

    def _next_block(self) -> bool:
        """Load the next block of the current file into ``_docs``; False at the end of the file."""
        file_idx = self._order[self.pos]
        if self._blocks is None:
            self._blocks = self.source.blocks(file_idx, self.cursor, self.block_size)
            resume_offset = self.in_block
        else:
            resume_offset = 0
        block = next(self._blocks, None)
        if block is None:
            return False
        self.cursor = block.cursor
        self._docs, self._next = self._selected(file_idx, block)[resume_offset:], 0
        self.in_block = resume_offset
        return True

    def next_doc(self) -> Doc:
        while True:
            while self._next < len(self._docs):
                raw = self._docs[self._next]
                self._next += 1
                self.in_block += 1
                doc = self.source.decode(self._order[self.pos], raw, self._skips)
                if doc is not None:
                    self.docs_in_epoch += 1
                    return doc
            if self.pos < len(self._order) and self._next_block():
                continue
            if self.pos < len(self._order):
                self._finish_file()
            if self.pos >= len(self._order):
                self._finish_epoch()
