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

# FlexBERT options mmBERT trained with that this implementation fixes: (option, required value, default when
# the config leaves it out, FlexBertConfig's default).
_FIXED = {
    "mlp_layer": "glu",
    "bert_layer": "prenorm",
    "attention_layer": "rope",
    "embedding_layer": "sans_pos",
    "normalization": "layernorm",
    "hidden_act": "gelu",
    "head_pred_act": "gelu",
    "embed_norm": True,
    "final_norm": True,
    "skip_first_prenorm": True,
    "head_pred_norm": True,
    "decoder_bias": True,
    "tie_word_embeddings": True,
    "attn_qkv_bias": False,
    "attn_out_bias": False,
    "mlp_in_bias": False,
    "mlp_out_bias": False,
    "head_pred_bias": False,
}


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
    config.json Composer stores). CheckpointError naming the option for anything this model cannot run."""
    for key, needed in _FIXED.items():
        if key in d and d[key] != needed:
            raise CheckpointError(f"{source}: unsupported FlexBERT option {key}={d[key]!r} (only {needed!r})")
    norm_kwargs = d.get("norm_kwargs") or {}
    if norm_kwargs.get("bias", False):
        raise CheckpointError(f"{source}: unsupported FlexBERT option norm_kwargs.bias=true (only false)")
    missing = [
        k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers") if k not in d
    ]
    missing += [] if "num_attention_heads" in d else ["num_attention_heads"]
    if missing:
        raise CheckpointError(f"{source}: FlexBERT config lacks {missing}")
    base = float(d.get("rotary_emb_base", 10000.0))
    local = d.get("local_attn_rotary_emb_base", -1)
    ids = {k: d[k] for k in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id",
                             "mask_token_id") if isinstance(d.get(k), int)}  # fmt: skip
    try:
        return MmBertConfig(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=int(d["num_attention_heads"]),
            # FlexBERT's window is the total width, as here (attention sees +- window // 2).
            local_attention=int(d.get("sliding_window", 128)),
            global_attn_every_n_layers=int(d.get("global_attn_every_n_layers", 3)),
            global_rope_theta=base,
            # -1 (FlexBERT's default) means "the global base".
            local_rope_theta=base if local in (None, -1) else float(local),
            # FlexBERT's RoPE needs no position table and BertConfig's 512 default is left in its config, so
            # the field does not describe the model; mmBERT runs 8192-token contexts.
            max_position_embeddings=MmBertConfig.max_position_embeddings,
            norm_eps=float(norm_kwargs.get("eps", 1e-5)),
            embedding_dropout=float(d.get("embed_dropout_prob", 0.0)),
            attention_dropout=float(d.get("attention_probs_dropout_prob", 0.0)),
            attention_output_dropout=float(d.get("attn_out_dropout_prob", 0.0)),
            mlp_dropout=float(d.get("mlp_dropout_prob", 0.0)),
            **ids,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: FlexBERT config does not fit MmBertConfig: {err}") from err
