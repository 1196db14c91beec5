"""Documents -> chunks -> packed rows of ``seq_len`` tokens.

Every chunk is framed ``<bos> ... <eos>`` and holds at most ``seq_len`` tokens, so a long document becomes
several self-contained chunks. A body of exactly ``seq_len - 1`` tokens is one chunk ``<bos> ...`` without the
``<eos>``: that is a full-length released MDS chunk (``<bos>`` + 8191 tokens at 8192), which would otherwise
become a full row plus a 3-token document. Rows are packed best-fit from a buffer of pending chunks: the oldest pending
chunk opens the row (no chunk waits forever), then the largest chunk that still fits is added until none does.
Ties go to the older chunk, so packing is deterministic.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    """One packed row: ``ids`` (int32, <= seq_len), per-segment lengths and language indices."""

    ids: np.ndarray
    seg_lens: np.ndarray
    seg_langs: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])


def frame_documents(
    bodies: Sequence[Sequence[int] | np.ndarray], seq_len: int, bos_id: int, eos_id: int
) -> list[list[np.ndarray]]:
    """Split each document's token ids (without specials) into ``<bos> piece <eos>`` chunks of at most
    ``seq_len`` tokens. All chunks are views of one array, built from one flat list (per-document numpy
    calls would cost more than the tokenizer on short documents)."""
    step = seq_len - 2
    flat: list[int] = []
    spans: list[list[tuple[int, int]]] = []
    for body in bodies:
        if isinstance(body, np.ndarray):
            body = body.tolist()
        doc_spans = []
        if len(body) == seq_len - 1:
            flat.append(bos_id)
            flat.extend(body)
            spans.append([(len(flat) - seq_len, len(flat))])
            continue
        for lo in range(0, max(len(body), 1), step):
            start = len(flat)
            flat.append(bos_id)
            flat.extend(body[lo : lo + step])
            flat.append(eos_id)
            doc_spans.append((start, len(flat)))
        spans.append(doc_spans)
    arr = np.array(flat, dtype=np.int32)
    return [[arr[a:b] for a, b in doc_spans] for doc_spans in spans]


class BestFitPacker:
    """Pending chunks are indexed by (length, -age) in a sorted list, so the largest chunk that fits (the
    oldest among equals) is a binary search away."""

    def __init__(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self._chunks: dict[int, tuple[int, np.ndarray]] = {}  # arrival number -> (language index, chunk)
        self._by_len: list[tuple[int, int]] = []  # sorted (length, -arrival)
        self._arrival = 0
        self._oldest = 0  # no pending chunk arrived before this number

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def pending(self) -> list[tuple[int, np.ndarray]]:
        """Pending (language, chunk) pairs, oldest first (the packer's state)."""
        return [self._chunks[k] for k in sorted(self._chunks)]

    @pending.setter
    def pending(self, items: list[tuple[int, np.ndarray]]) -> None:
        self._chunks, self._by_len, self._arrival, self._oldest = {}, [], 0, 0
        for lang, chunk in items:
            self.add(lang, chunk)

    def add(self, lang: int, chunk: np.ndarray) -> None:
        if not 0 < len(chunk) <= self.seq_len:
            raise ValueError(f"chunk of {len(chunk)} tokens does not fit seq_len {self.seq_len}")
        self._chunks[self._arrival] = (lang, chunk)
        insort(self._by_len, (len(chunk), -self._arrival))
        self._arrival += 1

    def _take(self, arrival: int) -> tuple[int, np.ndarray]:
        item = self._chunks.pop(arrival)
        del self._by_len[bisect_left(self._by_len, (len(item[1]), -arrival))]
        return item

    def pop_row(self) -> Row:
        if not self._chunks:
            raise IndexError("pop_row from an empty packer")
        while self._oldest not in self._chunks:
            self._oldest += 1
        chosen = [self._take(self._oldest)]
        space = self.seq_len - len(chosen[0][1])
        while space > 0 and self._by_len:
            i = bisect_right(self._by_len, (space, 1)) - 1  # the largest length <= space, oldest first
            if i < 0:
                break
            length, neg_arrival = self._by_len[i]
            chosen.append(self._take(-neg_arrival))
            space -= length
        return Row(
            ids=np.concatenate([c for _, c in chosen]),
            seg_lens=np.asarray([len(c) for _, c in chosen], dtype=np.int32),
            seg_langs=np.asarray([lang for lang, _ in chosen], dtype=np.int16),
        )

    def drain(self) -> list[Row]:
        rows = []
        while self.pending:
            rows.append(self.pop_row())
        return rows
