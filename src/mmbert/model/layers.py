"""Building blocks of the encoder: embeddings, attention, GeGLU MLP, pre-norm layer, MLM prediction head.

Module and parameter names match transformers' ModernBERT so that state dicts map one to one.

Shape legend: T packed tokens, H hidden size, V vocabulary, D head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.model.attention import BucketLayout, Workspace, packed_attention
from mmbert.model.config import MmBertConfig
from mmbert.model.rope import apply_rope_to_qkv, rope_qkv_into

# Tokens per row block of the per-token steps in CPU inference (see MmBertEncoderLayer): a block's largest
# intermediate, the [rows, 2 * intermediate] GeGLU input, then stays within a core's cache (4.5 MiB in bf16
# for mmBERT's 1,152). Measured on mmBERT-small at variable-512 (2-core EPYC): 1.25-1.3x in bf16 and
# 1.1-1.15x in fp32 over whole-batch ops, with 384 to 1,536 rows all close.
CPU_INFERENCE_ROW_BLOCK = 1024


@dataclass(frozen=True)
class PackedBatch:
    """Per-forward state shared by all layers: document boundaries, resolved backend, RoPE tables."""

    cu_seqlens_N1: Tensor
    max_seqlen: int
    backend: str
    rope_global: tuple[Tensor, Tensor]  # cos, sin [T, D // 2], fp32
    rope_local: tuple[Tensor, Tensor]
    layout: BucketLayout | None
    # CPU inference: tokens per block of the per-token steps (None: whole-batch ops), and the buffers that the
    # layers reuse.
    row_block: int | None = None
    workspace: Workspace | None = None


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
        cos, sin = self.rope(batch)
        qkv_T3HD = apply_rope_to_qkv(qkv_T3HD, cos, sin)
        return self.out_drop(self.Wo(self.attend(qkv_T3HD, batch).reshape(T, -1)))

    def rope(self, batch: PackedBatch) -> tuple[Tensor, Tensor]:
        return batch.rope_global if self.is_global else batch.rope_local

    def attend(self, qkv_T3HD: Tensor, batch: PackedBatch) -> Tensor:
        """Attention of rotated [T, 3, H, D] queries, keys and values inside their documents: [T, H, D]."""
        return packed_attention(
            qkv_T3HD,
            batch.cu_seqlens_N1,
            batch.max_seqlen,
            self.window,
            batch.backend,
            dropout_p=self.attention_dropout if self.training else 0.0,
            layout=batch.layout,
            workspace=batch.workspace,
        )


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
        # A compiled layer (training's regional compile, in validation) traces the whole-batch ops.
        if batch.row_block is not None and not torch.compiler.is_compiling():
            return self._forward_by_row_blocks(x_TH, batch, batch.row_block)
        x_TH = x_TH + self.attn(self.attn_norm(x_TH), batch)
        return x_TH + self.mlp(self.mlp_norm(x_TH))

    def _forward_by_row_blocks(self, x_TH: Tensor, batch: PackedBatch, rows: int) -> Tensor:
        """The same layer (eval mode, no autograd) with every per-token step run a block of `rows` tokens at
        a time: norms, projections, RoPE, the MLP and the residual adds; only attention sees the whole batch.
        Whole-batch ops on a CPU stream each [T, F] intermediate through memory (a matmul with a large output
        runs well below its in-cache rate); blocks keep them in cache. Row blocks split no sum: the values are
        the whole-batch path's (tested bit for bit; an fp32 BLAS may round a block of fewer rows than its tile
        differently, by about an ulp). `attn` is called through its parts (forward hooks on `attn` itself do
        not fire; those on its Linear modules and on `mlp` fire once per block)."""
        attn = self.attn
        T = x_TH.shape[0]
        cos_TD, sin_TD = attn.rope(batch)
        shape = (T, 3, attn.num_heads, attn.head_dim)
        qkv_T3HD = (
            x_TH.new_empty(shape) if batch.workspace is None else batch.workspace.take("qkv", shape, x_TH)
        )
        for r in _row_blocks(T, rows):
            y_t3HD = attn.Wqkv(self.attn_norm(x_TH[r])).view(-1, 3, attn.num_heads, attn.head_dim)
            rope_qkv_into(y_t3HD, qkv_T3HD[r], cos_TD[r], sin_TD[r])
        o_TF = attn.attend(qkv_T3HD, batch).reshape(T, -1)
        out_TH = torch.empty_like(x_TH)
        for r in _row_blocks(T, rows):
            h_tH = x_TH[r] + attn.Wo(o_TF[r])
            torch.add(h_tH, self.mlp(self.mlp_norm(h_tH)), out=out_TH[r])
        return out_TH


def _row_blocks(num_rows: int, rows: int) -> list[slice]:
    return [slice(i, i + rows) for i in range(0, num_rows, rows)]


class MmBertPredictionHead(nn.Module):
    def __init__(self, config: MmBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)

    def forward(self, x_TH: Tensor) -> Tensor:
        return self.norm(F.gelu(self.dense(x_TH)))
