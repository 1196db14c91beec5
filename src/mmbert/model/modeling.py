"""The mmBERT encoder (MmBertModel) and its masked-LM wrapper (MmBertForMaskedLM).

Both take either a packed batch (input_ids [T] + cu_seqlens [N + 1], the training path) or a padded batch
(input_ids [B, L] + attention_mask [B, L], the users' path, unpadded inside).

Shape legend: T packed tokens, N documents, B rows, L padded length, H hidden size, V vocabulary,
n labelled positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmbert.model.attention import BUCKET_KERNELS, BucketLayout, Workspace, select_attn_backend
from mmbert.model.config import MmBertConfig, require_positive
from mmbert.model.layers import (
    CPU_INFERENCE_ROW_BLOCK,
    MmBertEmbeddings,
    MmBertEncoderLayer,
    MmBertPredictionHead,
    PackedBatch,
)
from mmbert.model.loss import IGNORE_INDEX, compute_dtype, linear_cross_entropy, linear_logits
from mmbert.model.padding import Unpadded, unpad
from mmbert.model.rope import positions_in_documents, rope_cos_sin


@dataclass(frozen=True)
class DeferredLogits:
    """The logits of a labelled call, computed only when read: the fused loss never materialises them."""

    head_nH: Tensor  # the prediction head's output the loss was computed from
    weight_VH: Tensor
    bias_V: Tensor
    dtype: torch.dtype  # the forward's compute dtype (the autocast dtype under autocast)
    grad_enabled: bool  # the forward's grad mode
    unpadded: Unpadded | None  # dense prediction on a padded call: repad [T, V] to [B, L, V]

    def compute(self) -> Tensor:
        with torch.set_grad_enabled(self.grad_enabled):
            logits = linear_logits(self.head_nH, self.weight_VH, self.bias_V, self.dtype)
            return logits if self.unpadded is None else self.unpadded.repad(logits)


@dataclass
class MaskedLMOutput:
    """Output of MmBertForMaskedLM.

    `logits`: sparse prediction with labels, [n, V] in the order of labels[labels != -100]; otherwise [T, V]
    packed / [B, L, V] padded. Without labels they are computed in the forward, as before. With labels (the
    training and validation path) the forward only computes the loss and `predictions`, chunk by chunk, and
    the logits are computed on the first read of `.logits` from the head output kept here, in the forward's
    compute dtype and grad mode, with the decoder weights of that moment: read them before an optimizer step
    changes the weights. Reading them allocates the [n, V] the loss avoided.
    """

    loss: Tensor | None
    last_hidden_state: Tensor  # after final_norm: [T, H] packed / [B, L, H] padded
    # With labels: the argmax token [n] of every labelled position, in the order of labels[labels != -100]
    # (no grad); None without labels.
    predictions: Tensor | None
    _logits: Tensor | DeferredLogits = field(repr=False)

    @property
    def logits(self) -> Tensor:
        if isinstance(self._logits, DeferredLogits):
            self._logits = self._logits.compute()
        return self._logits


class MmBertModel(nn.Module):
    """Embeddings, encoder layers and final norm."""

    def __init__(self, config: MmBertConfig | Mapping[str, Any]) -> None:
        super().__init__()
        self.config = config = MmBertConfig.coerce(config)
        self.embeddings = MmBertEmbeddings(config)
        self.layers = nn.ModuleList(MmBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Recipe init: truncated normal at +- cutoff * std; std `initializer_range` for the token embedding,
        Wqkv and Wi; `initializer_range / sqrt(2 * layers)` for both Wo; norm weights 1."""
        cfg = self.config
        _trunc_normal(self.embeddings.tok_embeddings.weight, cfg, cfg.initializer_range)
        for layer in self.layers:
            _trunc_normal(layer.attn.Wqkv.weight, cfg, cfg.initializer_range)
            _trunc_normal(layer.attn.Wo.weight, cfg, _std_out(cfg))
            _trunc_normal(layer.mlp.Wi.weight, cfg, cfg.initializer_range)
            _trunc_normal(layer.mlp.Wo.weight, cfg, _std_out(cfg))
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)

    def forward(
        self,
        input_ids: Tensor,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Hidden states [T, H] for packed input_ids [T], or [B, L, H] (zeros at padding) for [B, L]."""
        if input_ids.dim() == 2:
            unpadded = _unpad_inputs(input_ids, cu_seqlens, attention_mask)
            hidden_TH = self.forward_packed(
                unpadded.pack(input_ids), unpadded.cu_seqlens_N1, unpadded.max_seqlen
            )
            return unpadded.repad(hidden_TH)
        _check_packed_inputs(input_ids, cu_seqlens, attention_mask)
        return self.forward_packed(input_ids, cu_seqlens, max_seqlen)

    def forward_packed(
        self,
        input_ids_T: Tensor,
        cu_seqlens_N1: Tensor,
        max_seqlen: int | None = None,
        *,
        sparse_embedding_grad: bool = False,
    ) -> Tensor:
        """Packed forward; `sparse_embedding_grad` is for MmBertForMaskedLM (see MmBertEmbeddings.forward)."""
        batch = self._packed_batch(cu_seqlens_N1, input_ids_T.shape[0], max_seqlen)
        x_TH = self.embeddings(input_ids_T, sparse_grad=sparse_embedding_grad)
        for layer in self.layers:
            x_TH = layer(x_TH, batch)
        return self.final_norm(x_TH)

    def _packed_batch(self, cu_seqlens_N1: Tensor, num_tokens: int, max_seqlen: int | None) -> PackedBatch:
        cfg = self.config
        device = cu_seqlens_N1.device
        if max_seqlen is None:
            max_seqlen = (
                int((cu_seqlens_N1[1:] - cu_seqlens_N1[:-1]).max()) if cu_seqlens_N1.numel() > 1 else 0
            )
        positions_T = positions_in_documents(cu_seqlens_N1, num_tokens)
        rope_global = rope_cos_sin(positions_T, cfg.global_rope_theta, cfg.head_dim)
        rope_local = (
            rope_global
            if cfg.local_rope_theta == cfg.global_rope_theta
            else rope_cos_sin(positions_T, cfg.local_rope_theta, cfg.head_dim)
        )
        if torch.is_autocast_enabled(device.type):
            compute_dtype = torch.get_autocast_dtype(device.type)
        else:
            compute_dtype = self.embeddings.tok_embeddings.weight.dtype
        backend = select_attn_backend(
            cfg.attn_backend,
            device,
            compute_dtype,
            dropout=self.training and cfg.attention_dropout > 0,
            inference=not torch.is_grad_enabled(),
        )
        # Row blocks (and documents attended alone) pay on a CPU only; accelerators run one kernel per op over
        # the whole batch.
        by_rows = device.type == "cpu" and not self.training and not torch.is_grad_enabled()
        layout = (
            BucketLayout.build(cu_seqlens_N1, cfg.half_window, kernel=backend, solo=by_rows)
            if backend in BUCKET_KERNELS
            else None
        )
        return PackedBatch(
            cu_seqlens_N1,
            max_seqlen,
            backend,
            rope_global,
            rope_local,
            layout,
            row_block=CPU_INFERENCE_ROW_BLOCK if by_rows else None,
            workspace=Workspace() if by_rows else None,
        )


class MmBertForMaskedLM(nn.Module):
    """ModernBERT/mmBERT masked-LM model; state_dict names equal transformers' ModernBertForMaskedLM."""

    def __init__(self, config: MmBertConfig | Mapping[str, Any]) -> None:
        super().__init__()
        self.model = MmBertModel(config)
        # The encoder's config object itself: set_rope_theta changes what the encoder reads.
        self.config = config = self.model.config
        self.head = MmBertPredictionHead(config)
        # Built on meta so that no [V, H] weight is allocated before tying it to the token embedding.
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight
        self.decoder.bias = nn.Parameter(torch.empty(config.vocab_size))
        self._reset_head()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-initialise every weight per the recipe (see MmBertModel.reset_parameters)."""
        self.model.reset_parameters()
        self._reset_head()

    @torch.no_grad()
    def _reset_head(self) -> None:
        """head.dense like the residual output projections, head norm 1, decoder bias 0 (the decoder weight is
        the token embedding)."""
        _trunc_normal(self.head.dense.weight, self.config, _std_out(self.config))
        nn.init.ones_(self.head.norm.weight)
        nn.init.zeros_(self.decoder.bias)

    def tie_weights(self) -> None:
        """Re-tie the decoder to the token embedding (after assigning parameters, e.g. a load with assign)."""
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def set_rope_theta(self, global_theta: float, local_theta: float) -> None:
        """Context extension: change RoPE bases (the cos/sin tables are computed per forward from the config)."""
        require_positive("global_rope_theta", global_theta)
        require_positive("local_rope_theta", local_theta)
        self.config.global_rope_theta = float(global_theta)
        self.config.local_rope_theta = float(local_theta)

    def forward(
        self,
        input_ids: Tensor,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> MaskedLMOutput:
        """MLM forward; see MaskedLMOutput for what each field holds.

        Without labels: logits of every real token. With labels (-100 = not predicted): the fp32 mean cross
        entropy and the argmax `predictions` of the labelled positions, from a fused decoder + loss that
        never holds [n, V]; the logits are then computed only if `.logits` is read.
        """
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(
                f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        if input_ids.dim() == 2:
            unpadded = _unpad_inputs(input_ids, cu_seqlens, attention_mask)
            labels_T = None
            if labels is not None:
                on_padding = (
                    labels.reshape(-1).index_fill(0, unpadded.indices_T, IGNORE_INDEX) != IGNORE_INDEX
                )
                if bool(on_padding.any()):
                    raise ValueError("labels must be -100 wherever attention_mask is 0")
                labels_T = unpadded.pack(labels)
            hidden_TH = self.model.forward_packed(
                unpadded.pack(input_ids),
                unpadded.cu_seqlens_N1,
                unpadded.max_seqlen,
                sparse_embedding_grad=labels_T is not None,
            )
            loss, predictions, logits = self._mlm(hidden_TH, labels_T, unpadded)
            return MaskedLMOutput(loss, unpadded.repad(hidden_TH), predictions, logits)
        _check_packed_inputs(input_ids, cu_seqlens, attention_mask)
        # With labels, the loss gives the tied decoder weight a dense gradient that the embedding's sparse one
        # is added into.
        hidden_TH = self.model.forward_packed(
            input_ids, cu_seqlens, max_seqlen, sparse_embedding_grad=labels is not None
        )
        loss, predictions, logits = self._mlm(hidden_TH, labels, None)
        return MaskedLMOutput(loss, hidden_TH, predictions, logits)

    def _mlm(
        self, hidden_TH: Tensor, labels_T: Tensor | None, unpadded: Unpadded | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | DeferredLogits]:
        """(loss, predictions, logits) as MaskedLMOutput holds them; `unpadded` repads a padded call's dense
        logits."""
        if labels_T is None:
            logits = self.decoder(self.head(hidden_TH))
            return None, None, logits if unpadded is None else unpadded.repad(logits)
        _check_labels(labels_T, self.config.vocab_size)
        sparse = self.config.sparse_prediction
        labelled_T = labels_T != IGNORE_INDEX
        if sparse:
            index_n = labelled_T.nonzero().squeeze(1)
            hidden_TH, labels_T = hidden_TH.index_select(0, index_n), labels_T.index_select(0, index_n)
        head_nH = self.head(hidden_TH)
        weight_VH, bias_V = self.decoder.weight, self.decoder.bias
        loss, predictions_n = linear_cross_entropy(head_nH, weight_VH, bias_V, labels_T.long())
        logits = DeferredLogits(
            head_nH,
            weight_VH,
            bias_V,
            compute_dtype(head_nH, weight_VH),
            torch.is_grad_enabled(),
            None if sparse else unpadded,
        )
        return loss, predictions_n if sparse else predictions_n[labelled_T], logits


def _std_out(cfg: MmBertConfig) -> float:
    """Init std of the projections that write into the residual stream."""
    return cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)


def _trunc_normal(weight: Tensor, cfg: MmBertConfig, std: float) -> None:
    cut = cfg.initializer_cutoff_factor * std
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cut, b=cut)


def _unpad_inputs(
    input_ids_BL: Tensor, cu_seqlens: Tensor | None, attention_mask_BL: Tensor | None
) -> Unpadded:
    """The padded path's checks and unpadding, shared by MmBertModel and MmBertForMaskedLM."""
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens is for packed 1-D input_ids; padded [B, L] input takes attention_mask")
    if attention_mask_BL is None:
        attention_mask_BL = torch.ones_like(input_ids_BL, dtype=torch.bool)
    elif attention_mask_BL.shape != input_ids_BL.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask_BL.shape)} != input_ids shape {tuple(input_ids_BL.shape)}"
        )
    return unpad(attention_mask_BL)


def _check_packed_inputs(
    input_ids_T: Tensor, cu_seqlens_N1: Tensor | None, attention_mask: Tensor | None
) -> None:
    if input_ids_T.dim() != 1:
        raise ValueError(
            f"input_ids must be packed [T] or padded [B, L], got shape {tuple(input_ids_T.shape)}"
        )
    if attention_mask is not None:
        raise ValueError("attention_mask is for padded [B, L] input_ids; packed input takes cu_seqlens")
    if cu_seqlens_N1 is None:
        raise ValueError("packed 1-D input_ids need cu_seqlens (int32 document boundaries starting at 0)")
    if cu_seqlens_N1.dim() != 1 or cu_seqlens_N1.numel() < 2 or cu_seqlens_N1.dtype != torch.int32:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32 tensor with >= 2 entries, got {cu_seqlens_N1.dtype} "
            f"of shape {tuple(cu_seqlens_N1.shape)}"
        )
    if cu_seqlens_N1.device != input_ids_T.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens_N1.device} but input_ids on {input_ids_T.device}")
    bad = (cu_seqlens_N1[0] != 0) | (cu_seqlens_N1[-1] != input_ids_T.shape[0])
    bad = bad | (cu_seqlens_N1[1:] < cu_seqlens_N1[:-1]).any()
    _raise_if(
        bad, f"cu_seqlens must start at 0, be non-decreasing and end at len(input_ids)={input_ids_T.shape[0]}"
    )


def _check_labels(labels_T: Tensor, vocab_size: int) -> None:
    out_of_range = (labels_T != IGNORE_INDEX) & ((labels_T < 0) | (labels_T >= vocab_size))
    _raise_if(out_of_range.any(), f"labels must be -100 or token ids in [0, vocab_size={vocab_size})")


def _raise_if(condition: Tensor, message: str) -> None:
    """ValueError on the host; on accelerators an asynchronous device assert, so as not to stall the stream."""
    if condition.device.type == "cpu":
        if bool(condition):
            raise ValueError(message)
    else:
        torch._assert_async(~condition, message)
