"""Packed rows -> one training/validation batch (before masking).

All documents of all rows are concatenated into one token stream with ``cu_seqlens`` marking document
boundaries. The stream is padded at the tail to ``n_rows * seq_len`` tokens (a fixed shape per row count);
the padding forms its own segments of at most ``seq_len`` tokens, so ``max_seqlen <= seq_len``.

Tensor suffixes: T tokens of the batch, N segments (documents and padding), L languages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmbert.data.packing import Row


def assemble(rows: Sequence[Row], seq_len: int, pad_id: int, num_languages: int) -> dict[str, Any]:
    ids = np.concatenate([r.ids for r in rows])
    seg_lens = np.concatenate([r.seg_lens for r in rows]).astype(np.int64)
    seg_langs = np.concatenate([r.seg_langs for r in rows]).astype(np.int64)
    num_tokens = int(ids.shape[0])
    pad = len(rows) * seq_len - num_tokens
    pad_segs = [seq_len] * (pad // seq_len) + ([pad % seq_len] if pad % seq_len else [])
    ids_T = torch.full((len(rows) * seq_len,), pad_id, dtype=torch.long)
    ids_T[:num_tokens] = torch.from_numpy(ids.astype(np.int64))
    lens_N = np.concatenate([seg_lens, np.asarray(pad_segs, dtype=np.int64)])
    cu_seqlens_N1 = torch.zeros(len(lens_N) + 1, dtype=torch.int32)
    cu_seqlens_N1[1:] = torch.from_numpy(np.cumsum(lens_N)).to(torch.int32)
    lang_tokens_L = torch.from_numpy(np.bincount(seg_langs, weights=seg_lens, minlength=num_languages))
    return {
        "input_ids": ids_T,
        "cu_seqlens": cu_seqlens_N1,
        "max_seqlen": int(lens_N.max()),
        "num_tokens": num_tokens,
        "num_rows": len(rows),
        "lang_tokens": lang_tokens_L.to(torch.long),
    }


class StepBatch:
    """The micro-batches of one optimizer step on one device (masked, still on the CPU).

    A plain class rather than a list or dataclass, so Lightning does not move every micro-batch to the
    device at once: the training step moves each one when it runs it.
    """

    __slots__ = ("micro_batches",)

    def __init__(self, micro_batches: list[dict[str, Any]]) -> None:
        if not micro_batches:
            raise ValueError("a training step needs at least one micro-batch")
        self.micro_batches = micro_batches

    @property
    def num_rows(self) -> int:
        return sum(int(mb["num_rows"]) for mb in self.micro_batches)

    def __len__(self) -> int:
        return len(self.micro_batches)


def split_rows(rows: int, rows_per_device: int) -> list[int]:
    """Rows of each micro-batch of a step: full micro-batches first, the remainder last."""
    if rows < 1 or rows_per_device < 1:
        raise ValueError(f"need rows >= 1 and rows_per_device >= 1, got {rows} and {rows_per_device}")
    full, rest = divmod(rows, rows_per_device)
    return [rows_per_device] * full + ([rest] if rest else [])
