"""FlexBERT (ModernBERT's and mmBERT's training code, saved by Composer) <-> this project's names and config.

Composer saves ``state["model"]`` of its ``HuggingFaceModel`` wrapper around ``FlexBertForMaskedLM``, so every
key starts with ``model.``; a ``torch.compile``d model adds ``_orig_mod.`` and a DDP-wrapped one ``module.``.
FlexBERT's layout (``src/bert_layers`` of AnswerDotAI/ModernBERT) maps one to one onto transformers' ModernBERT,
which are this project's names:

| FlexBERT | project |
|---|---|
| ``bert.embeddings.tok_embeddings`` / ``.norm`` | ``model.embeddings.tok_embeddings`` / ``.norm`` |
| ``bert.encoder.layers.N.{attn_norm,attn.Wqkv,attn.Wo,mlp_norm,mlp.Wi,mlp.Wo}`` | ``model.layers.N.`` (same) |
| ``bert.final_norm`` | ``model.final_norm`` |
| ``head.dense``, ``head.norm``, ``decoder`` | the same |

(layer 0 has no ``attn_norm``: ``skip_first_prenorm``; the GLU's ``Wi`` is ``[input; gate]`` on both sides.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mmbert.errors import CheckpointError
from mmbert.model import MmBertConfig

log = logging.getLogger(__name__)

WRAPPER_PREFIX = "model."  # composer.models.HuggingFaceModel keeps the network as .model
_STRIPPED = {"_orig_mod", "module"}  # torch.compile and DDP wrappers' path segments, wherever they are
_RENAMES = (("bert.encoder.layers.", "model.layers."), ("bert.", "model."))

# What a FlexBERT config means is FlexBertConfig's (src/bert_layers/configuration_bert.py of
# AnswerDotAI/ModernBERT) and the layer code that reads it. Each option below changes what the network
# computes; the value FlexBERT takes when a config leaves it out (FlexBertConfig's default, or for hidden_act
# and tie_word_embeddings transformers' BertConfig/PretrainedConfig default) comes first, then the values this
# implementation runs. Note the defaults that differ from mmBERT's recipe: attention_layer "base" (learned
# positions, no RoPE), embedding_layer "absolute_pos", mlp_layer "mlp", normalization "rmsnorm",
# head_pred_act "silu", final_norm and skip_first_prenorm False. config_from_flexbert also takes FlexBERT's
# defaults for sliding_window and global_attn_every_n_layers (-1: no window, every layer global),
# rotary_emb_base (10000), local_attn_rotary_emb_base (-1: the global base), rotary_emb_dim and
# local_attn_rotary_emb_dim (None: the head dim), the four dropouts (0.0) and, for norm_kwargs, nn.LayerNorm's
# (eps 1e-5, bias and elementwise_affine true).
_OPTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    # "padded_"/"unpadded_" name the same layers run on padded or unpadded batches (FlexBERT prefixes the
    # ``padding`` setting when a name has neither); the compile variant torch.compiles the same prenorm layer.
    "attention_layer": ("base", ("rope", "unpadded_rope", "padded_rope")),
    "bert_layer": ("prenorm", ("prenorm", "unpadded_prenorm", "padded_prenorm", "unpadded_compile_prenorm")),
    "encoder_layer": ("base", ("base", "unpadded_base", "padded_base")),
    "padding": ("unpadded", ("unpadded", "padded")),
    "embedding_layer": ("absolute_pos", ("sans_pos",)),
    "mlp_layer": ("mlp", ("glu",)),
    # triton_layernorm is flash-attn's kernel for nn.LayerNorm: same parameters, same math.
    "normalization": ("rmsnorm", ("layernorm", "triton_layernorm")),
    "hidden_act": ("gelu", ("gelu",)),  # nn.GELU(): the exact (erf) GELU
    "head_pred_act": ("silu", ("gelu",)),
    "embed_norm": (True, (True,)),
    "final_norm": (False, (True,)),
    "skip_first_prenorm": (False, (True,)),
    "head_pred_norm": (True, (True,)),
    "decoder_bias": (True, (True,)),
    "tie_word_embeddings": (True, (True,)),
    "attn_qkv_bias": (False, (False,)),
    "attn_out_bias": (False, (False,)),
    "mlp_in_bias": (False, (False,)),
    "mlp_out_bias": (False, (False,)),
    "head_pred_bias": (False, (False,)),
    "rotary_emb_scale_base": (None, (None,)),  # not None: XPos
    "rotary_emb_interleaved": (False, (False,)),  # True: GPT-J pairs (2i, 2i+1) rather than (i, i + d/2)
}
# The first num_initial_layers layers of the other type, when set: the same layer type is the same model.
_INITIAL_LAYERS = {
    "initial_attention_layer": "attention_layer",
    "initial_bert_layer": "bert_layer",
    "initial_mlp_layer": "mlp_layer",
}
# Every other FlexBERT option is accepted because it does not change the network's outputs: kernels and
# speed (use_fa2, deterministic_fa2, use_sdpa_attn_mask, compile_model, unpad_embeddings, pad_logits,
# masked_prediction, allow_embedding_resizing), initialisation (init_*), the training loss (loss_function,
# loss_kwargs), the classification head (head_class_*, pooling_type) and BertConfig fields FlexBERT's MLM does
# not read (hidden_dropout_prob, layer_norm_eps, type_vocab_size, max_position_embeddings with sans_pos).


def project_name(key: str) -> str:
    """The project's (HF ModernBERT) name of a Composer/FlexBERT state-dict key."""
    key = ".".join(part for part in key.split(".") if part not in _STRIPPED).removeprefix(WRAPPER_PREFIX)
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def project_state(model_state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``state["model"]`` of a Composer checkpoint under the project's names (tensors only; a name two keys
    share after renaming is an error naming both)."""
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in model_state.items():
        if not hasattr(value, "shape"):
            continue
        name = project_name(key)
        if name in out:
            raise CheckpointError(f"{source}: {key!r} and {origin[name]!r} both map to {name!r}")
        out[name], origin[name] = value, key
    if not out:
        raise CheckpointError(f"{source}: state['model'] holds no tensors")
    return out


def composer_hf_config(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The FlexBERT config.json Composer's HuggingFaceModel stored in ``state["integrations"]``, if any."""
    try:
        content = checkpoint["state"]["integrations"]["huggingface"]["model"]["config"]["content"]
    except (KeyError, TypeError):
        return None
    return dict(content) if isinstance(content, Mapping) else None


def composer_tokenizer_files(checkpoint: Mapping[str, Any]) -> dict[str, bytes]:
    """The tokenizer files Composer's HuggingFaceModel stored in ``state["integrations"]`` (contents as it
    keeps them: parsed JSON, lists of lines, bytes or text), as file bytes; empty if there are none."""
    try:
        stored = checkpoint["state"]["integrations"]["huggingface"]["tokenizer"]
    except (KeyError, TypeError):
        return {}
    files: dict[str, bytes] = {}
    for name, entry in (stored or {}).items():
        content = entry.get("content") if isinstance(entry, Mapping) else None
        if "/" in name or name.startswith(".") or content is None:
            continue  # only plain file names, written into a folder of ours
        if isinstance(content, bytes):
            files[name] = content
        elif isinstance(content, str):
            files[name] = content.encode()
        elif isinstance(content, list) and name.endswith(".txt"):
            files[name] = "\n".join(map(str, content)).encode()
        elif isinstance(content, Mapping | list):
            files[name] = json.dumps(content, ensure_ascii=False).encode()
    return files


def config_from_flexbert(d: Mapping[str, Any], *, source: str) -> MmBertConfig:
    """MmBertConfig from a FlexBERT config (the released mmBERT training YAML's ``model_config`` or the
    config.json Composer stores). A key the config leaves out takes FlexBERT's default; CheckpointError naming
    the option, its value and what is supported for anything this model does not compute the same way."""
    _check_options(d, source)
    missing = [
        k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers") if k not in d
    ]
    missing += [] if "num_attention_heads" in d else ["num_attention_heads"]
    if missing:
        raise CheckpointError(f"{source}: FlexBERT config lacks {missing}")
    local_attention, global_every = _attention_pattern(d, source)
    base = float(d.get("rotary_emb_base", 10000.0))
    local = d.get("local_attn_rotary_emb_base", -1)
    ids = {k: d[k] for k in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id",
                             "mask_token_id") if isinstance(d.get(k), int)}  # fmt: skip
    try:
        cfg = MmBertConfig(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=int(d["num_attention_heads"]),
            local_attention=local_attention,
            global_attn_every_n_layers=global_every,
            global_rope_theta=base,
            # -1 (FlexBERT's default) means "the global base".
            local_rope_theta=base if local in (None, -1) else float(local),
            # FlexBERT's RoPE needs no position table and BertConfig's 512 default is left in its config, so
            # the field does not describe the model; mmBERT runs 8192-token contexts.
            max_position_embeddings=MmBertConfig.max_position_embeddings,
            norm_eps=float((d.get("norm_kwargs") or {}).get("eps", 1e-5)),  # nn.LayerNorm's default eps
            embedding_dropout=float(d.get("embed_dropout_prob", 0.0)),
            attention_dropout=float(d.get("attention_probs_dropout_prob", 0.0)),
            attention_output_dropout=float(d.get("attn_out_dropout_prob", 0.0)),
            mlp_dropout=float(d.get("mlp_dropout_prob", 0.0)),
            **ids,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: FlexBERT config does not fit MmBertConfig: {err}") from err
    _check_rotary_dims(d, cfg.head_dim, source)
    return cfg


def _refuse(source: str, key: str, value: Any, supported: str, absent: bool = False) -> CheckpointError:
    default = " (FlexBERT's default: the config leaves it out)" if absent else ""
    return CheckpointError(
        f"{source}: unsupported FlexBERT option {key}={value!r}{default}; supported: {supported}"
    )


def _check_options(d: Mapping[str, Any], source: str) -> None:
    """Refuse the layer types, activations, norms, biases and RoPE variants this model does not implement."""
    for key, (default, accepted) in _OPTIONS.items():
        value = d.get(key, default)
        if value not in accepted:
            raise _refuse(source, key, value, " or ".join(map(repr, accepted)), absent=key not in d)
    for key, main in _INITIAL_LAYERS.items():
        value = d.get(key)
        if value is not None and value not in _OPTIONS[main][1]:
            raise _refuse(source, key, value, "None or " + " or ".join(map(repr, _OPTIONS[main][1])))
    norm_kwargs = d.get("norm_kwargs") or {}
    # FlexBERT passes norm_kwargs to nn.LayerNorm, whose bias and elementwise_affine default to true.
    bias = norm_kwargs.get("bias", True)
    if bias:
        raise _refuse(source, "norm_kwargs.bias", bias, "False", absent="bias" not in norm_kwargs)
    if not norm_kwargs.get("elementwise_affine", True):
        raise _refuse(source, "norm_kwargs.elementwise_affine", norm_kwargs["elementwise_affine"], "True")


def _attention_pattern(d: Mapping[str, Any], source: str) -> tuple[int, int]:
    """(local_attention, global_attn_every_n_layers) of FlexBERT's sliding_window and global_attn_every_n_layers
    (both -1 by default): a window of -1 makes every layer global; a window with global_attn_every_n_layers
    < 1 makes every layer local, which this model (layer 0 always global) cannot express."""
    window = d.get("sliding_window", -1)
    every = d.get("global_attn_every_n_layers", -1)
    if window == -1:
        if every != -1:  # FlexBertConfig refuses this pair too
            raise _refuse(source, "global_attn_every_n_layers", every, "-1 with sliding_window=-1")
        # Every layer global: the window is never used, MmBertConfig's default only fills the field.
        return MmBertConfig.local_attention, 1
    if isinstance(window, bool) or not isinstance(window, int) or window < 2 or window % 2:
        raise _refuse(source, "sliding_window", window, "-1 (every layer global) or an even integer >= 2")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        supported = "an integer >= 1 with a sliding window (< 1 makes every layer local)"
        absent = "global_attn_every_n_layers" not in d
        raise _refuse(source, "global_attn_every_n_layers", every, supported, absent=absent)
    return window, every


def _check_rotary_dims(d: Mapping[str, Any], head_dim: int, source: str) -> None:
    """RoPE rotates the whole head here; FlexBERT rotates only the first rotary_emb_dim features when that is
    smaller (None, the default, is the head dim, and FlexBERT writes the head dim back into the config)."""
    for key in ("rotary_emb_dim", "local_attn_rotary_emb_dim"):
        value = d.get(key)
        if value is not None and value != head_dim:
            raise _refuse(
                source, key, value, f"None or the head dim {head_dim} (hidden_size / num_attention_heads)"
            )
