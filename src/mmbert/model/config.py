"""MmBertConfig: the architecture hyper-parameters of a ModernBERT/mmBERT encoder.

Field names are a contract with `conf/model/*.yaml` (Hydra instantiates this dataclass from the `config:` node)
and with `mmbert.checkpoint.hf_config`, which maps them to and from a Hugging Face `config.json`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ATTN_BACKENDS = ("auto", "sdpa", "matmul", "flash", "varlen")


@dataclass
class MmBertConfig:
    """Defaults are mmBERT-base; `conf/model/{tiny,small,base}.yaml` set every field explicitly."""

    vocab_size: int = 256000
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    # Total local window in tokens: a token sees keys with |i - j| <= local_attention // 2.
    local_attention: int = 128
    # Layer i is global when i % global_attn_every_n_layers == 0.
    global_attn_every_n_layers: int = 3
    global_rope_theta: float = 10000.0
    local_rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    # Truncated-normal init is cut at +- initializer_cutoff_factor * std.
    initializer_cutoff_factor: float = 2.0
    embedding_dropout: float = 0.0
    # Dropout on the attention probabilities (Hugging Face's `attention_dropout`); inside the attention kernel,
    # so torch's varlen backend cannot run with it.
    attention_dropout: float = 0.0
    # Dropout on the attention output projection (after Wo; FlexBERT's attn_out_dropout_prob, 0.1 in the
    # mmBERT recipe). Default 0 so that configs and checkpoints written before this field train as they did;
    # conf/model/*.yaml set the recipe value. Outside the kernel: every backend supports it.
    attention_output_dropout: float = 0.0
    mlp_dropout: float = 0.0
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    mask_token_id: int = 4
    # mmBERT (Gemma 2 tokenizer) uses the EOS token as CLS and SEP.
    cls_token_id: int = 1
    sep_token_id: int = 1
    # With labels, run the MLM head only on positions whose label is not -100.
    sparse_prediction: bool = True
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "local_attention",
            "global_attn_every_n_layers",
            "max_position_embeddings",
        ):
            _require_int(name, getattr(self, name), minimum=1)
        for name in (
            "pad_token_id",
            "eos_token_id",
            "bos_token_id",
            "mask_token_id",
            "cls_token_id",
            "sep_token_id",
        ):
            value = getattr(self, name)
            _require_int(name, value, minimum=0)
            if value >= self.vocab_size:
                raise ValueError(f"{name}={value} must be < vocab_size={self.vocab_size}")
        for name in (
            "global_rope_theta",
            "local_rope_theta",
            "norm_eps",
            "initializer_range",
            "initializer_cutoff_factor",
        ):
            require_positive(name, getattr(self, name))
        for name in ("embedding_dropout", "attention_dropout", "attention_output_dropout", "mlp_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head dim hidden_size/num_attention_heads={self.head_dim} must be even for RoPE"
            )
        if self.local_attention % 2:
            raise ValueError(
                f"local_attention={self.local_attention} must be even (a symmetric window of 2 * w)"
            )
        if not isinstance(self.sparse_prediction, bool):
            raise ValueError(f"sparse_prediction must be a bool, got {self.sparse_prediction!r}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend={self.attn_backend!r} is not one of {ATTN_BACKENDS}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def half_window(self) -> int:
        """Largest |i - j| a local layer attends to."""
        return self.local_attention // 2

    def is_global_layer(self, layer_idx: int) -> bool:
        return layer_idx % self.global_attn_every_n_layers == 0

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def coerce(cls, config: MmBertConfig | Mapping[str, Any]) -> MmBertConfig:
        """The config itself, or one built from a mapping of its fields (e.g. an OmegaConf DictConfig, which
        Hydra may hand over instead of the instantiated dataclass); a `_target_` key is ignored."""
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(str(k) for k in config if k not in known and k != "_target_")
            if unknown:
                raise ValueError(f"unknown MmBertConfig fields: {unknown}")
            return cls(**{k: v for k, v in config.items() if k != "_target_"})
        raise TypeError(f"expected an MmBertConfig or a mapping of its fields, got {type(config).__name__}")


def require_positive(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
