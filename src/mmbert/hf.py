"""Hugging Face interop: transformers' ModernBertForMaskedLM <-> MmBertForMaskedLM, config.json, HF folders.

Parameter names are identical on both sides; the token embedding and the decoder weight are one tied tensor
(`decoder.weight` is never written to files and may be absent from them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mmbert.model import MmBertConfig, MmBertForMaskedLM

if TYPE_CHECKING:
    from transformers import ModernBertForMaskedLM, PreTrainedTokenizerBase

HF_MODEL_TYPE = "modernbert"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_BIN_FILE = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
TIED_KEY = "decoder.weight"
EMBEDDING_KEY = "model.embeddings.tok_embeddings.weight"
_HUB_PATTERNS = [
    CONFIG_FILE,
    "*.safetensors",
    SAFETENSORS_INDEX_FILE,
    TORCH_BIN_FILE,
    "*.json",
    "*.model",
    "*.txt",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
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


def hf_config_dict(cfg: MmBertConfig) -> dict[str, Any]:
    """config.json content for transformers' ModernBERT, every mmBERT field written explicitly (transformers'
    own defaults differ, e.g. local theta 10k and cls pooling). Both the legacy keys (global_attn_every_n_layers,
    *_rope_theta) and transformers 5's layer_types / rope_parameters are written, so old and new versions read
    the same model."""
    layer_types = [
        "full_attention" if cfg.is_global_layer(i) else "sliding_attention"
        for i in range(cfg.num_hidden_layers)
    ]
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
        "sparse_prediction": cfg.sparse_prediction,
        "sparse_pred_ignore_index": -100,
    }


def config_from_hf_dict(d: Mapping[str, Any]) -> MmBertConfig:
    """MmBertConfig from a ModernBERT config.json dict; missing keys take transformers' defaults (parsed by
    transformers itself). ValueError naming the field for another model_type or an unsupported option."""
    from transformers import ModernBertConfig

    if d.get("model_type") != HF_MODEL_TYPE:
        raise ValueError(f"model_type must be {HF_MODEL_TYPE!r}, got {d.get('model_type')!r}")
    hf = ModernBertConfig.from_dict(dict(d))
    for key, needed in _FIXED_OPTIONS.items():
        if getattr(hf, key) != needed:
            raise ValueError(f"unsupported ModernBERT option {key}={getattr(hf, key)!r} (only {needed!r})")
    head_dim = getattr(hf, "head_dim", None)
    if head_dim is not None and head_dim * hf.num_attention_heads != hf.hidden_size:
        raise ValueError(f"unsupported head_dim={head_dim}: must be hidden_size / num_attention_heads")
    for kind in ("full_attention", "sliding_attention"):
        rope_type = hf.rope_parameters[kind].get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f"unsupported rope_parameters.{kind}.rope_type={rope_type!r} (only 'default')")
    for key in _TOKEN_ID_FIELDS:
        if not isinstance(getattr(hf, key), int):
            raise ValueError(f"unsupported {key}={getattr(hf, key)!r}: a single integer token id is required")
    every_n = _global_every_n(list(hf.layer_types))
    if (
        "global_attn_every_n_layers" in d
        and d["global_attn_every_n_layers"] != every_n
        and hf.num_hidden_layers > 1
    ):
        raise ValueError(
            f"global_attn_every_n_layers={d['global_attn_every_n_layers']} disagrees with layer_types "
            f"(global every {every_n} layers)"
        )
    return MmBertConfig(
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        intermediate_size=hf.intermediate_size,
        num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads,
        local_attention=hf.local_attention,
        global_attn_every_n_layers=every_n,
        global_rope_theta=float(hf.rope_parameters["full_attention"]["rope_theta"]),
        local_rope_theta=float(hf.rope_parameters["sliding_attention"]["rope_theta"]),
        max_position_embeddings=hf.max_position_embeddings,
        norm_eps=hf.norm_eps,
        initializer_range=hf.initializer_range,
        initializer_cutoff_factor=hf.initializer_cutoff_factor,
        embedding_dropout=float(hf.embedding_dropout),
        attention_dropout=float(hf.attention_dropout),
        mlp_dropout=float(hf.mlp_dropout),
        pad_token_id=hf.pad_token_id,
        eos_token_id=hf.eos_token_id,
        bos_token_id=hf.bos_token_id,
        cls_token_id=hf.cls_token_id,
        sep_token_id=hf.sep_token_id,
        mask_token_id=d.get("mask_token_id", MmBertConfig.mask_token_id),
        sparse_prediction=bool(hf.sparse_prediction),
    )


def _global_every_n(layer_types: list[str]) -> int:
    """The n of `layer i is global iff i % n == 0` that reproduces layer_types; ValueError if none does."""
    global_layers = [i for i, t in enumerate(layer_types) if t == "full_attention"]
    every_n = global_layers[1] if len(global_layers) > 1 else max(len(layer_types), 1)
    expected = [
        "full_attention" if i % every_n == 0 else "sliding_attention" for i in range(len(layer_types))
    ]
    if layer_types != expected:
        raise ValueError(
            f"unsupported layer_types={layer_types}: global layers must be every n-th from layer 0"
        )
    return every_n


def from_hf(hf_model: ModernBertForMaskedLM) -> MmBertForMaskedLM:
    """Copy of a transformers ModernBertForMaskedLM (same weights, dtype and device; decoder tied)."""
    cfg = config_from_hf_dict(hf_model.config.to_dict())
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    model = _model_from_state_dict(cfg, state, source=f"{type(hf_model).__name__}")
    return model.train(hf_model.training)


def to_hf(model: MmBertForMaskedLM) -> ModernBertForMaskedLM:
    """transformers ModernBertForMaskedLM with the same weights (copied), dtype, device and tied decoder."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    hf_cfg = ModernBertConfig.from_dict(hf_config_dict(model.config))
    param = model.model.embeddings.tok_embeddings.weight
    hf_model = ModernBertForMaskedLM(hf_cfg).to(device=param.device, dtype=param.dtype)
    hf_model.load_state_dict(model.state_dict(), strict=True)
    if hf_model.decoder.weight is not hf_model.model.embeddings.tok_embeddings.weight:
        raise RuntimeError("transformers did not tie decoder.weight to the token embedding")
    return hf_model.train(model.training)


def save_hf_folder(
    model: MmBertForMaskedLM,
    path: str | Path,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write config.json, model.safetensors (without the tied decoder.weight) and, if given, the tokenizer
    (a tokenizer folder, a tokenizer.json file or a transformers tokenizer) into `path`; returns the folder."""
    folder = Path(path)
    tok = _resolve_tokenizer(tokenizer, model.config)
    if tok is not None:
        _check_tokenizer_size(tok, model.config)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = model.model.embeddings.tok_embeddings.weight.dtype
    config = hf_config_dict(model.config) | {"dtype": str(dtype).removeprefix("torch.")}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != TIED_KEY}
    save_file(state, folder / SAFETENSORS_FILE, metadata={"format": "pt"})
    if tok is not None:
        tok.save_pretrained(folder)
    return folder


def load_hf_folder(
    path_or_hub_name: str | Path, *, revision: str | None = None
) -> tuple[MmBertForMaskedLM, PreTrainedTokenizerBase | None]:
    """Model (fp32, CPU) and tokenizer (None if the folder has none) from a local HF folder or a hub name such
    as jhu-clsp/mmBERT-small (downloaded through the HF cache; honours HF_HUB_OFFLINE). Strict: missing,
    unexpected or misshapen tensors raise, naming them."""
    folder = _resolve_folder(path_or_hub_name, revision)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {folder}")
    cfg = config_from_hf_dict(json.loads(config_path.read_text()))
    tokenizer = None
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        _check_tokenizer_size(tokenizer, cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in _read_weights(folder).items()}
    return _model_from_state_dict(cfg, state, source=str(folder)), tokenizer


def _resolve_folder(path_or_hub_name: str | Path, revision: str | None) -> Path:
    local = Path(path_or_hub_name).expanduser()
    if local.is_dir():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} only applies to hub names, but {local} is a local folder"
            )
        return local
    if local.exists():
        raise NotADirectoryError(f"{local} is a file; expected an HF model folder or a hub name")
    name = str(path_or_hub_name)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(f"{name!r} is neither a local folder nor a hub name like 'org/model'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # hub errors are many types; re-raise with what was asked for
        raise FileNotFoundError(
            f"could not get hub model {name!r} (revision {revision!r}) as a local folder or from the hub: {e}"
        ) from e


def _read_weights(folder: Path) -> dict[str, Tensor]:
    if (folder / SAFETENSORS_FILE).is_file():
        return load_file(folder / SAFETENSORS_FILE)
    if (folder / SAFETENSORS_INDEX_FILE).is_file():
        weight_map: dict[str, str] = json.loads((folder / SAFETENSORS_INDEX_FILE).read_text())["weight_map"]
        state: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = folder / shard
            if not shard_path.is_file():
                raise FileNotFoundError(
                    f"shard {shard} listed in {SAFETENSORS_INDEX_FILE} is missing from {folder}"
                )
            state.update(load_file(shard_path))
        absent = sorted(set(weight_map) - set(state))
        if absent:
            raise ValueError(
                f"tensors listed in {SAFETENSORS_INDEX_FILE} but absent from their shards: {absent}"
            )
        return state
    if (folder / TORCH_BIN_FILE).is_file():
        return torch.load(folder / TORCH_BIN_FILE, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no {SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE} or {TORCH_BIN_FILE} in {folder}"
    )


def _model_from_state_dict(cfg: MmBertConfig, state: dict[str, Tensor], *, source: str) -> MmBertForMaskedLM:
    """Build the model on meta and assign `state` (no init, no copy); all or nothing."""
    with torch.device("meta"):
        model = MmBertForMaskedLM(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state) - {TIED_KEY})
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state dict from {source} does not match the model: missing {missing}, unexpected {unexpected}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != expected[key]:
            raise ValueError(
                f"{key} from {source} has shape {tuple(tensor.shape)}, the model needs {expected[key]}"
            )
    if TIED_KEY in state and not torch.equal(state[TIED_KEY], state[EMBEDDING_KEY]):
        raise ValueError(
            f"{TIED_KEY} from {source} differs from {EMBEDDING_KEY}: untied decoders are unsupported"
        )
    model.load_state_dict({k: v for k, v in state.items() if k != TIED_KEY}, strict=False, assign=True)
    model.tie_weights()
    return model


def _resolve_tokenizer(
    tokenizer: str | Path | PreTrainedTokenizerBase | None, cfg: MmBertConfig
) -> PreTrainedTokenizerBase | None:
    if tokenizer is None:
        return None
    from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    if not isinstance(tokenizer, str | Path):
        raise TypeError(
            f"tokenizer must be None, a path or a PreTrainedTokenizerBase, got {type(tokenizer).__name__}"
        )
    path = Path(tokenizer)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    if path.is_file() and path.suffix == ".json":
        from tokenizers import Tokenizer

        raw = Tokenizer.from_file(str(path))
        special: dict[str, str] = {}
        for role, token_id in (
            ("pad_token", cfg.pad_token_id),
            ("eos_token", cfg.eos_token_id),
            ("bos_token", cfg.bos_token_id),
            ("cls_token", cfg.cls_token_id),
            ("sep_token", cfg.sep_token_id),
            ("mask_token", cfg.mask_token_id),
        ):
            token = raw.id_to_token(token_id)
            if token is None:
                raise ValueError(
                    f"{role.removesuffix('_token')}_token_id={token_id} is not in tokenizer {path}"
                )
            special[role] = token
        return PreTrainedTokenizerFast(tokenizer_object=raw, **special)
    raise FileNotFoundError(f"tokenizer {path} is neither a tokenizer folder nor a tokenizer .json file")


def _check_tokenizer_size(tokenizer: PreTrainedTokenizerBase, cfg: MmBertConfig) -> None:
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size={cfg.vocab_size}")
