"""Packed batches for fine-tuning and embedding: documents concatenated with cu_seqlens, no padding.

Shape legend: T packed tokens, N documents, H hidden size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Packed:
    input_ids_T: Tensor
    cu_seqlens_N1: Tensor  # int32 document boundaries
    max_seqlen: int

    @property
    def num_docs(self) -> int:
        return self.cu_seqlens_N1.numel() - 1

    def doc_index_T(self) -> Tensor:
        """Which document each packed token belongs to."""
        lengths_N = self.cu_seqlens_N1[1:] - self.cu_seqlens_N1[:-1]
        return torch.repeat_interleave(torch.arange(self.num_docs, device=lengths_N.device), lengths_N)

    def to(self, device: torch.device | str) -> Packed:
        return Packed(self.input_ids_T.to(device), self.cu_seqlens_N1.to(device), self.max_seqlen)


def pack(seqs: Sequence[Tensor], device: torch.device | str = "cpu") -> Packed:
    lengths = torch.tensor([len(s) for s in seqs])
    if len(seqs) == 0 or bool((lengths == 0).any()):
        raise ValueError("pack needs one or more non-empty sequences")
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return Packed(torch.cat(list(seqs)).to(device), cu.to(device), int(lengths.max()))


def segment_mean(hidden_TH: Tensor, packed: Packed) -> Tensor:
    """[N, H]: each document's mean hidden state over all its tokens (<bos>/<eos> included: mmBERT's
    ``classifier_pooling: mean`` averages every unmasked position)."""
    doc_T = packed.doc_index_T()
    sums_NH = hidden_TH.new_zeros(packed.num_docs, hidden_TH.shape[-1]).index_add_(0, doc_T, hidden_TH)
    lengths_N1 = (packed.cu_seqlens_N1[1:] - packed.cu_seqlens_N1[:-1]).to(hidden_TH.dtype)[:, None]
    return sums_NH / lengths_N1


def batches_by_tokens(
    lengths: Sequence[int], max_tokens: int, max_docs: int, order: Sequence[int]
) -> list[list[int]]:
    """Consecutive indices of ``order`` grouped so that no batch holds more than ``max_tokens`` tokens (a longer
    document goes alone) or ``max_docs`` documents: packing makes a batch's cost its token count."""
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        if current and (tokens + lengths[i] > max_tokens or len(current) >= max_docs):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    if current:
        batches.append(current)
    return batches
