"""Unpad a [B, L] batch into packed documents and pad results back.

Shape legend: B rows, L padded length, T real tokens, N documents (= B).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Unpadded:
    indices_T: Tensor  # flat [B * L] index of every real token, row-major
    cu_seqlens_N1: Tensor  # int32
    max_seqlen: int
    batch_size: int
    seq_len: int

    def pack(self, x_BL: Tensor) -> Tensor:
        return x_BL.reshape(self.batch_size * self.seq_len, *x_BL.shape[2:]).index_select(0, self.indices_T)

    def repad(self, x_T: Tensor) -> Tensor:
        """[T, ...] -> [B, L, ...] with zeros at padded positions."""
        out = x_T.new_zeros(self.batch_size * self.seq_len, *x_T.shape[1:])
        out = out.index_copy(0, self.indices_T, x_T)
        return out.view(self.batch_size, self.seq_len, *x_T.shape[1:])


def unpad(attention_mask_BL: Tensor) -> Unpadded:
    """Each row's attended tokens must be one contiguous run (right or left padding): one document per row."""
    if attention_mask_BL.dim() != 2:
        raise ValueError(f"attention_mask must be [B, L], got shape {tuple(attention_mask_BL.shape)}")
    mask_BL = attention_mask_BL.bool()
    if not torch.equal(mask_BL.to(attention_mask_BL.dtype), attention_mask_BL):
        raise ValueError("attention_mask must contain only 0 and 1")
    B, L = mask_BL.shape
    lengths_B = mask_BL.sum(1)
    first_B = mask_BL.int().argmax(1)
    pos_L = torch.arange(L, device=mask_BL.device)
    run_BL = (pos_L >= first_B[:, None]) & (pos_L < (first_B + lengths_B)[:, None])
    if not torch.equal(run_BL, mask_BL):
        raise ValueError("attention_mask rows must be one contiguous run of 1s (a single document per row)")
    cu_seqlens_N1 = F.pad(lengths_B.cumsum(0, dtype=torch.int32), (1, 0))
    return Unpadded(
        indices_T=mask_BL.reshape(-1).nonzero().squeeze(1),
        cu_seqlens_N1=cu_seqlens_N1,
        max_seqlen=int(lengths_B.max()) if B else 0,
        batch_size=B,
        seq_len=L,
    )
