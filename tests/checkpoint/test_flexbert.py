"""mmbert.checkpoint.flexbert's config mapping, strictly: every FlexBERT option this model does not compute is
refused naming itself, spellings of the same computation load alike, and absent keys mean FlexBERT's defaults
(FlexBertConfig in src/bert_layers/configuration_bert.py of AnswerDotAI/ModernBERT)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import FLEXBERT_CONFIG

from mmbert.checkpoint.flexbert import config_from_flexbert
from mmbert.errors import CheckpointError
from mmbert.model import MmBertConfig

HEAD_DIM = FLEXBERT_CONFIG["hidden_size"] // FLEXBERT_CONFIG["num_attention_heads"]  # 32
SIZES = {k: FLEXBERT_CONFIG[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads")}  # fmt: skip
# The options whose FlexBERT default is not what mmBERT trained with: a config must state them.
RECIPE_NON_DEFAULTS = {
    "attention_layer": "rope", "embedding_layer": "sans_pos", "mlp_layer": "glu", "normalization": "layernorm",
    "head_pred_act": "gelu", "final_norm": True, "skip_first_prenorm": True, "norm_kwargs": {"bias": False},
}  # fmt: skip


def _refusal(overrides: dict[str, Any], base: dict[str, Any] = FLEXBERT_CONFIG) -> str:
    with pytest.raises(CheckpointError) as info:
        config_from_flexbert(base | overrides, source="x.pt")
    return str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rotary_emb_dim", 16),  # partial RoPE
        ("rotary_emb_dim", 64),
        ("local_attn_rotary_emb_dim", 16),
        ("rotary_emb_interleaved", True),
        ("rotary_emb_scale_base", 512),  # XPos
        ("initial_attention_layer", "base"),
        ("initial_attention_layer", "rope_parallel"),
        ("initial_bert_layer", "postnorm"),
        ("initial_mlp_layer", "mlp"),
        ("attention_layer", "base"),
        ("attention_layer", "unpadded_rope_parallel"),
        ("bert_layer", "postnorm"),
        ("bert_layer", "parallel_prenorm"),
        ("encoder_layer", "parallel"),
        ("padding", "packed"),
        ("embedding_layer", "absolute_pos"),
        ("mlp_layer", "mlp"),
        ("mlp_layer", "parallel_glu"),
        ("normalization", "rmsnorm"),
        ("normalization", "triton_rmsnorm"),
        ("hidden_act", "gelu_tanh"),
        ("hidden_act", "silu"),
        ("head_pred_act", "silu"),
        ("head_pred_act", None),
        ("embed_norm", False),
        ("final_norm", False),
        ("skip_first_prenorm", False),
        ("head_pred_norm", False),
        ("decoder_bias", False),
        ("tie_word_embeddings", False),
        ("attn_qkv_bias", True),
        ("attn_out_bias", True),
        ("mlp_in_bias", True),
        ("mlp_out_bias", True),
        ("head_pred_bias", True),
        ("sliding_window", 0),
        ("sliding_window", 127),
        ("global_attn_every_n_layers", -1),  # with sliding_window 128: every layer local
        ("global_attn_every_n_layers", 0),
    ],
)
def test_an_option_this_model_does_not_compute_is_refused_naming_itself(key, value):
    message = _refusal({key: value})
    assert message.startswith(f"x.pt: unsupported FlexBERT option {key}={value!r}; supported: ")
    assert "\n" not in message


def test_refusals_say_what_is_supported():
    assert _refusal({"rotary_emb_dim": 16}) == (
        "x.pt: unsupported FlexBERT option rotary_emb_dim=16; "
        "supported: None or the head dim 32 (hidden_size / num_attention_heads)"
    )
    assert _refusal({"normalization": "rmsnorm"}) == (
        "x.pt: unsupported FlexBERT option normalization='rmsnorm'; supported: 'layernorm' or 'triton_layernorm'"
    )
    assert _refusal({"initial_mlp_layer": "mlp"}) == (
        "x.pt: unsupported FlexBERT option initial_mlp_layer='mlp'; supported: None or 'glu'"
    )
    assert _refusal({"sliding_window": -1}) == (
        "x.pt: unsupported FlexBERT option global_attn_every_n_layers=3; supported: -1 with sliding_window=-1"
    )


@pytest.mark.parametrize(
    ("norm_kwargs", "message"),
    [
        ({"eps": 1e-5, "bias": True}, "norm_kwargs.bias=True; supported: False"),
        (
            {"eps": 1e-5},
            "norm_kwargs.bias=True (FlexBERT's default: the config leaves it out); supported: False",
        ),
        (
            {"bias": False, "elementwise_affine": False},
            "norm_kwargs.elementwise_affine=False; supported: True",
        ),
    ],
)
def test_norm_kwargs_that_change_the_layer_norm_are_refused(norm_kwargs, message):
    assert _refusal({"norm_kwargs": norm_kwargs}) == f"x.pt: unsupported FlexBERT option {message}"


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("attention_layer", "base"),
        ("embedding_layer", "absolute_pos"),
        ("mlp_layer", "mlp"),
        ("normalization", "rmsnorm"),
        ("head_pred_act", "silu"),
        ("final_norm", False),
        ("skip_first_prenorm", False),
    ],
)
def test_an_absent_key_is_flexberts_default(key, default):
    config = {k: v for k, v in FLEXBERT_CONFIG.items() if k != key}
    message = _refusal({}, base=config)
    assert message.startswith(
        f"x.pt: unsupported FlexBERT option {key}={default!r} (FlexBERT's default: the config leaves it out); "
    )


def test_a_window_without_global_layers_is_flexberts_all_local_default():
    config = {k: v for k, v in FLEXBERT_CONFIG.items() if k != "global_attn_every_n_layers"}
    assert _refusal({}, base=config) == (
        "x.pt: unsupported FlexBERT option global_attn_every_n_layers=-1 (FlexBERT's default: the config leaves it "
        "out); supported: an integer >= 1 with a sliding window (< 1 makes every layer local)"
    )


def test_a_config_stating_only_the_recipes_non_defaults_gets_flexberts_defaults_for_the_rest():
    # No window (all global), RoPE base 10000 everywhere, no dropout, nn.LayerNorm's eps.
    cfg = config_from_flexbert(SIZES | RECIPE_NON_DEFAULTS, source="x.pt")
    assert cfg == MmBertConfig(
        **SIZES,
        global_attn_every_n_layers=1,
        global_rope_theta=10000.0,
        local_rope_theta=10000.0,
        norm_eps=1e-5,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        attention_output_dropout=0.0,
        mlp_dropout=0.0,
    )


def test_sliding_window_minus_one_loads_as_all_global_layers():
    cfg = config_from_flexbert(
        FLEXBERT_CONFIG
        | {"sliding_window": -1, "global_attn_every_n_layers": -1, "local_attn_rotary_emb_base": -1},
        source="x.pt",
    )
    assert cfg.global_attn_every_n_layers == 1
    assert all(cfg.is_global_layer(i) for i in range(cfg.num_hidden_layers))
    assert cfg.global_rope_theta == cfg.local_rope_theta == 160000.0


def test_the_recipes_config_maps_exactly():
    assert config_from_flexbert(FLEXBERT_CONFIG, source="x.pt") == MmBertConfig(
        **SIZES,
        local_attention=128,
        global_attn_every_n_layers=3,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        norm_eps=1e-5,
        attention_output_dropout=0.1,
        pad_token_id=0,
    )


@pytest.mark.parametrize(
    ("key", "alias", "canonical"),
    [
        ("normalization", "triton_layernorm", "layernorm"),
        ("attention_layer", "unpadded_rope", "rope"),
        ("attention_layer", "padded_rope", "rope"),
        ("bert_layer", "unpadded_prenorm", "prenorm"),
        ("bert_layer", "padded_prenorm", "prenorm"),
        ("bert_layer", "unpadded_compile_prenorm", "prenorm"),
        ("encoder_layer", "unpadded_base", "base"),
        ("encoder_layer", "padded_base", "base"),
        ("padding", "padded", "unpadded"),
        ("rotary_emb_dim", HEAD_DIM, None),  # FlexBERT writes the head dim back into the config it saves
        ("local_attn_rotary_emb_dim", HEAD_DIM, None),
        ("initial_attention_layer", "rope", None),
        ("initial_bert_layer", "prenorm", None),
        ("initial_mlp_layer", "glu", None),
        ("local_attn_rotary_emb_base", 160000.0, -1),
        # Kernels, speed, initialisation and the training loss: the same network.
        ("use_fa2", False, True),
        ("deterministic_fa2", True, False),
        ("compile_model", False, True),
        ("unpad_embeddings", False, True),
        ("masked_prediction", False, True),
        ("loss_function", "cross_entropy", "fa_cross_entropy"),
        ("init_method", "default", "full_megatron"),
        ("allow_embedding_resizing", False, True),
    ],
)
def test_a_spelling_of_the_same_computation_loads_as_its_canonical_one(key, alias, canonical):
    aliased = config_from_flexbert(FLEXBERT_CONFIG | {key: alias}, source="x.pt")
    assert aliased == config_from_flexbert(FLEXBERT_CONFIG | {key: canonical}, source="x.pt")
