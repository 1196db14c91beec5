"""config.json <-> MmBertConfig: the architecture as transformers' ModernBERT describes it.

Parsed and written here rather than through transformers' ModernBertConfig, so that every transformers version
(4.48.3 to 5.x, legacy and new layouts) reads and writes the same model, and so that reading a checkpoint's
architecture needs no transformers at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmbert.checkpoint.formats import CONFIG_FILE
from mmbert.model import MmBertConfig

HF_MODEL_TYPE = "modernbert"
# Architecture options of transformers' ModernBERT that this implementation fixes, with the value it needs.
_FIXED_OPTIONS = {
    "hidden_activation": "gelu",
    "classifier_activation": "gelu",
    "norm_bias": False,
    "attention_bias": False,
    "mlp_bias": False,
    "decoder_bias": True,
    "tie_word_embeddings": True,
}
_TOKEN_ID_FIELDS = ("pad_token_id", "eos_token_id", "bos_token_id", "cls_token_id", "sep_token_id")
# A config.json without these does not describe a model: no default is taken for them.
_REQUIRED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)
# transformers' ModernBertConfig defaults (the same from 4.48 to 5.x) for the other fields a config.json may
# leave out, so that a file reads as transformers reads it.
_HF_DEFAULTS: dict[str, Any] = {
    "local_attention": 128,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "max_position_embeddings": 8192,
    "norm_eps": 1e-5,
    "initializer_range": 0.02,
    "initializer_cutoff_factor": 2.0,
    "embedding_dropout": 0.0,
    "attention_dropout": 0.0,
    "mlp_dropout": 0.0,
    "pad_token_id": 50283,
    "eos_token_id": 50282,
    "bos_token_id": 50281,
    "cls_token_id": 50281,
    "sep_token_id": 50282,
}
# rope_parameters key (transformers 5) and legacy key (transformers 4) of each RoPE theta.
_ROPE_THETA_KEYS = (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta"))


def hf_config_dict(cfg: MmBertConfig) -> dict[str, Any]:
    """config.json content for transformers' ModernBERT, every mmBERT field written explicitly (transformers'
    own defaults differ, e.g. local theta 10k and cls pooling). Both the legacy keys (global_attn_every_n_layers,
    *_rope_theta) and transformers 5's layer_types / rope_parameters are written, so old and new versions read
    the same model.

    Written for inference, as the released mmBERT checkpoints are: `sparse_prediction` is false (with labels,
    transformers then returns [B, L, V] logits like those checkpoints, not [n, V]), and the training-only
    `attention_output_dropout` is left out (transformers has no such option; its `attention_dropout` is the
    probability dropout)."""
    layer_types = _layer_types(cfg.num_hidden_layers, cfg.global_attn_every_n_layers)
    return {
        "architectures": ["ModernBertForMaskedLM"],
        "model_type": HF_MODEL_TYPE,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "initializer_cutoff_factor": cfg.initializer_cutoff_factor,
        "norm_eps": cfg.norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "bos_token_id": cfg.bos_token_id,
        "cls_token_id": cfg.cls_token_id,
        "sep_token_id": cfg.sep_token_id,
        "mask_token_id": cfg.mask_token_id,
        "local_attention": cfg.local_attention,
        "global_attn_every_n_layers": cfg.global_attn_every_n_layers,
        "global_rope_theta": cfg.global_rope_theta,
        "local_rope_theta": cfg.local_rope_theta,
        "layer_types": layer_types,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": cfg.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta},
        },
        "embedding_dropout": cfg.embedding_dropout,
        "attention_dropout": cfg.attention_dropout,
        "mlp_dropout": cfg.mlp_dropout,
        **_FIXED_OPTIONS,
        "classifier_pooling": "mean",
        "classifier_dropout": 0.0,
        "classifier_bias": False,
        "deterministic_flash_attn": False,
        "sparse_prediction": False,
        "sparse_pred_ignore_index": -100,
    }


def config_from_hf_dict(d: Mapping[str, Any], *, source: str = CONFIG_FILE) -> MmBertConfig:
    """MmBertConfig from a ModernBERT config.json dict, in either layout: transformers 5's (layer_types,
    rope_parameters) or the legacy one of transformers 4 and the released mmBERT checkpoints
    (global_attn_every_n_layers, global_rope_theta, local_rope_theta). Parsed here, not by transformers, so it
    works on every transformers version. Missing optional keys take transformers' defaults.

    A config.json describes the model for inference, so the training-only choices are this project's: its
    `sparse_prediction` (transformers' output-shape option, false in exports) is ignored and the field keeps
    MmBertConfig's default (sparse prediction on in training); `attention_output_dropout` is 0 (transformers
    has none) and `attn_backend` is "auto". Training runs override both from conf/model/*.yaml.

    ValueError naming `source` (the file) and the field: another model_type, a missing required field, an
    unsupported option or inconsistent layouts."""
    try:
        return _config_from_hf_dict(d)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def _config_from_hf_dict(d: Mapping[str, Any]) -> MmBertConfig:
    if d.get("model_type") != HF_MODEL_TYPE:
        raise ValueError(f"model_type must be {HF_MODEL_TYPE!r}, got {d.get('model_type')!r}")
    missing = [key for key in _REQUIRED_FIELDS if key not in d]
    if missing:
        raise ValueError(f"missing required field(s) {missing}")
    for key, needed in _FIXED_OPTIONS.items():
        if d.get(key, needed) != needed:
            raise ValueError(f"unsupported ModernBERT option {key}={d[key]!r} (only {needed!r})")
    if d.get("rope_scaling") is not None:
        raise ValueError(f"unsupported rope_scaling={d['rope_scaling']!r} (only default RoPE)")
    head_dim = d.get("head_dim")
    if head_dim is not None and head_dim * d["num_attention_heads"] != d["hidden_size"]:
        raise ValueError(f"unsupported head_dim={head_dim}: must be hidden_size / num_attention_heads")
    opt = _HF_DEFAULTS | {k: v for k, v in d.items() if k in _HF_DEFAULTS}
    for key in _TOKEN_ID_FIELDS:
        if isinstance(opt[key], bool) or not isinstance(opt[key], int):
            raise ValueError(f"unsupported {key}={opt[key]!r}: a single integer token id is required")
    global_theta, local_theta = (_rope_theta(d, kind, key) for kind, key in _ROPE_THETA_KEYS)
    return MmBertConfig(
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"],
        num_attention_heads=d["num_attention_heads"],
        local_attention=opt["local_attention"],
        global_attn_every_n_layers=_global_every_n(d),
        global_rope_theta=_as_float(global_theta),
        local_rope_theta=_as_float(local_theta),
        max_position_embeddings=opt["max_position_embeddings"],
        norm_eps=_as_float(opt["norm_eps"]),
        initializer_range=_as_float(opt["initializer_range"]),
        initializer_cutoff_factor=_as_float(opt["initializer_cutoff_factor"]),
        embedding_dropout=_as_float(opt["embedding_dropout"]),
        attention_dropout=_as_float(opt["attention_dropout"]),
        attention_output_dropout=0.0,
        mlp_dropout=_as_float(opt["mlp_dropout"]),
        pad_token_id=opt["pad_token_id"],
        eos_token_id=opt["eos_token_id"],
        bos_token_id=opt["bos_token_id"],
        cls_token_id=opt["cls_token_id"],
        sep_token_id=opt["sep_token_id"],
        mask_token_id=d.get("mask_token_id", MmBertConfig.mask_token_id),
    )


def _rope_theta(d: Mapping[str, Any], kind: str, legacy_key: str) -> Any:
    """transformers 5 reads rope_parameters[kind]["rope_theta"], transformers 4 the legacy key; a file with both
    (as this project writes) must give one value."""
    legacy = d.get(legacy_key)
    rope_parameters = d.get("rope_parameters") or {}
    if not isinstance(rope_parameters, Mapping):
        raise ValueError(f"unsupported rope_parameters={rope_parameters!r}: expected a mapping by layer type")
    params = rope_parameters.get(kind)
    if params is None:
        return _HF_DEFAULTS[legacy_key] if legacy is None else legacy
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"unsupported rope_parameters.{kind}.rope_type={rope_type!r} (only 'default')")
    theta = params.get("rope_theta", _HF_DEFAULTS[legacy_key] if legacy is None else legacy)
    if legacy is not None and legacy != theta:
        raise ValueError(f"{legacy_key}={legacy} disagrees with rope_parameters.{kind}.rope_theta={theta}")
    return theta


def _global_every_n(d: Mapping[str, Any]) -> Any:
    """The n of `layer i is global iff i % n == 0`: from layer_types (transformers 5) if present, else
    global_attn_every_n_layers (legacy). A file with both must describe the same layers."""
    every_n = d.get("global_attn_every_n_layers")
    layer_types = d.get("layer_types")
    if layer_types is None:
        return _HF_DEFAULTS["global_attn_every_n_layers"] if every_n is None else every_n
    if not isinstance(layer_types, list) or len(layer_types) != d["num_hidden_layers"]:
        raise ValueError(
            f"layer_types={layer_types!r} must list one type per layer "
            f"(num_hidden_layers={d['num_hidden_layers']!r})"
        )
    global_layers = [i for i, t in enumerate(layer_types) if t == "full_attention"]
    from_types = global_layers[1] if len(global_layers) > 1 else max(len(layer_types), 1)
    if layer_types != _layer_types(len(layer_types), from_types):
        raise ValueError(
            f"unsupported layer_types={layer_types}: global layers must be every n-th from layer 0"
        )
    if every_n is not None and (
        isinstance(every_n, bool)
        or not isinstance(every_n, int)
        or every_n < 1
        or _layer_types(len(layer_types), every_n) != layer_types
    ):
        raise ValueError(
            f"global_attn_every_n_layers={every_n!r} disagrees with layer_types (global every {from_types} layers)"
        )
    return from_types


def _layer_types(num_layers: int, every_n: int) -> list[str]:
    return ["full_attention" if i % every_n == 0 else "sliding_attention" for i in range(num_layers)]


def _as_float(value: Any) -> Any:
    """An int as a float (JSON may write 160000 for 160000.0); anything else is left to MmBertConfig's checks."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
