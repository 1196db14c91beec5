"""Building blocks of the encoder: embeddings, attention, GeGLU MLP, pre-norm layer, MLM prediction head.

Module and parameter names match transformers' ModernBERT so that state dicts map one to one.

Shape legend: T packed tokens, H hidden size, V vocabulary, D head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.model.attention import BucketLayout, packed_attention
from mmbert.model.config import MmBertConfig
from mmbert.model.rope import apply_rope_to_qkv


@dataclass(frozen=True)
class PackedBatch:
    """Per-forward state shared by all layers: document boundaries, resolved backend, RoPE tables."""

    cu_seqlens_N1: Tensor
    max_seqlen: int
    backend: str
    rope_global: tuple[Tensor, Tensor]  # cos, sin [T, D // 2], fp32
    rope_local: tuple[Tensor, Tensor]
    layout: BucketLayout | None


class MmBertEmbeddings(nn.Module):
    def __init__(self, config: MmBertConfig) -> None:
        super().__init__()
        # Passing _weight skips nn.Embedding's own init: the model initialises every weight itself.
        self.tok_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids_T: Tensor, *, sparse_grad: bool = False) -> Tensor:
        """`sparse_grad`: on CPU, hand autograd a sparse [V, H] gradient. Only for when the tied decoder gets a
        dense gradient in the same backward: autograd then adds the looked-up rows into it in place instead of
        zero-filling and adding a second dense [V, H] tensor, which is page-fault bound on CPU at V = 256k.
        Accelerators keep the ordinary dense gradient (cheap there, and what sharding wrappers expect)."""
        weight = self.tok_embeddings.weight
        if sparse_grad and weight.device.type == "cpu":
            embedded_TH = _SparseGradEmbedding.apply(input_ids_T, weight)
        else:
            embedded_TH = F.embedding(input_ids_T, weight)
        return self.drop(self.norm(embedded_TH))


class _SparseGradEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, input_ids_T: Tensor, weight_VH: Tensor) -> Tensor:
        ctx.save_for_backward(input_ids_T)
        ctx.weight_shape = weight_VH.shape
        return F.embedding(input_ids_T, weight_VH)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_TH: Tensor) -> tuple[None, Tensor]:
        (input_ids_T,) = ctx.saved_tensors
        grad_VH = torch.sparse_coo_tensor(
            input_ids_T[None], grad_TH, ctx.weight_shape, check_invariants=False
        )
        return None, grad_VH


class MmBertAttention(nn.Module):
    def __init__(self, config: MmBertConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.is_global = config.is_global_layer(layer_idx)
        self.window = -1 if self.is_global else config.half_window
        self.attention_dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.out_drop = nn.Dropout(config.attention_output_dropout)

    def forward(self, x_TH: Tensor, batch: PackedBatch) -> Tensor:
        T = x_TH.shape[0]
        qkv_T3HD = self.Wqkv(x_TH).view(T, 3, self.num_heads, self.head_dim)
        cos, sin = batch.rope_global if self.is_global else batch.rope_local
        qkv_T3HD = apply_rope_to_qkv(qkv_T3HD, cos, sin)
        out_THD = packed_attention(
            qkv_T3HD,
            batch.cu_seqlens_N1,
            batch.max_seqlen,
            self.window,
            batch.backend,
            dropout_p=self.attention_dropout if self.training else 0.0,
            layout=batch.layout,
        )
        return self.out_drop(self.Wo(out_THD.reshape(T, -1)))


class MmBertMLP(nn.Module):
    """GeGLU: Wo(gelu(a) * g) with [a, g] = Wi(x), exact (erf) GELU."""

    def __init__(self, config: MmBertConfig) -> None:
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x_TH: Tensor) -> Tensor:
        a, g = self.Wi(x_TH).chunk(2, dim=-1)
        h = F.gelu(a)
        # Without autograd the product may overwrite gelu's fresh output: one [T, I] buffer less per layer.
        h = h * g if torch.is_grad_enabled() else h.mul_(g)
        return self.Wo(self.drop(h))


class MmBertEncoderLayer(nn.Module):
    def __init__(self, config: MmBertConfig, layer_idx: int) -> None:
        super().__init__()
        # Layer 0 reads the embedding output, which is already normalised.
        self.attn_norm: nn.Module = (
            nn.Identity()
            if layer_idx == 0
            else nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        )
        self.attn = MmBertAttention(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.mlp = MmBertMLP(config)

    def forward(self, x_TH: Tensor, batch: PackedBatch) -> Tensor:
        x_TH = x_TH + self.attn(self.attn_norm(x_TH), batch)
        return x_TH + self.mlp(self.mlp_norm(x_TH))


class MmBertPredictionHead(nn.Module):
    def __init__(self, config: MmBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)

    def forward(self, x_TH: Tensor) -> Tensor:
        return self.norm(F.gelu(self.dense(x_TH)))
