"""Task heads on the packed encoder, laid out like transformers' ModernBertFor{SequenceClassification,
TokenClassification,QuestionAnswering}: encoder -> (mean pooling) -> prediction head -> dropout -> linear.

The prediction head starts from the checkpoint's MLM head (transformers loads it the same way, the names
match); the linear layer is new. Shape legend: T packed tokens, N documents, H hidden size, C outputs.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mmbert.downstream.packing import Packed, segment_mean
from mmbert.model import MmBertForMaskedLM


class EncoderWithHead(nn.Module):
    """``pooled``: one output row per document (mean over its tokens); else one per packed token."""

    def __init__(
        self, mlm: MmBertForMaskedLM, num_outputs: int, *, pooled: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        cfg = mlm.config
        self.config = cfg
        self.pooled = pooled
        self.model = copy.deepcopy(mlm.model)
        self.head = copy.deepcopy(mlm.head)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_outputs)
        with torch.no_grad():
            nn.init.trunc_normal_(
                self.classifier.weight,
                std=cfg.initializer_range,
                a=-cfg.initializer_cutoff_factor * cfg.initializer_range,
                b=cfg.initializer_cutoff_factor * cfg.initializer_range,
            )
            nn.init.zeros_(self.classifier.bias)

    def encode(self, batch: Packed) -> Tensor:
        """[T, H] last hidden states of the packed batch."""
        return self.model.forward_packed(batch.input_ids_T, batch.cu_seqlens_N1, batch.max_seqlen)

    def forward(self, batch: Packed) -> Tensor:
        """[N, C] if pooled else [T, C] logits."""
        hidden = self.encode(batch)
        if self.pooled:
            hidden = segment_mean(hidden, batch)
        return self.classifier(self.drop(self.head(hidden)))
