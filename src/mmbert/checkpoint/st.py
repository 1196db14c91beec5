"""The sentence-transformers folder: what ``SentenceTransformer(path)`` loads as the model's sentence
encoder, with the embeddings of ``mmbert.encode(model, texts, tokenizer=..., pooling="mean")``.

It is the Hugging Face folder (:func:`mmbert.checkpoint.hf.save_hf_folder`, its tokenizer framing texts as
``<bos> body <eos>``) with sentence-transformers' files beside it:

| file | what |
|---|---|
| ``modules.json`` | the modules in order: Transformer (the folder itself), Pooling (``1_Pooling/``) |
| ``sentence_bert_config.json`` | the Transformer's ``max_seq_length`` (framing included), no lower-casing |
| ``1_Pooling/config.json`` | mean pooling over the attention mask: ``<bos>`` and ``<eos>`` included |
| ``config_sentence_transformers.json`` | the model's settings: cosine similarity, no prompts |

The files are in the layout sentence-transformers has written since 2.x (``sentence_transformers.models.*``
module names, ``pooling_mode_*`` keys), which its later versions still read (6.x maps them onto its own
names), so one export serves old and new deployments alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mmbert.checkpoint.hf import save_hf_folder
from mmbert.errors import ConfigError
from mmbert.model import MmBertConfig, MmBertForMaskedLM

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MODULES_FILE = "modules.json"
TRANSFORMER_CONFIG_FILE = "sentence_bert_config.json"
POOLING_DIR = "1_Pooling"
MODEL_CONFIG_FILE = "config_sentence_transformers.json"


def resolve_max_seq_length(cfg: MmBertConfig, max_seq_length: int | None) -> int:
    """The most tokens of a text, framing included: ``max_seq_length``, by default the model's
    ``max_position_embeddings`` (what it was trained to read); ConfigError for anything outside 2 to that."""
    limit = cfg.max_position_embeddings
    if max_seq_length is None:
        return limit
    if (
        isinstance(max_seq_length, bool)
        or not isinstance(max_seq_length, int)
        or not 2 <= max_seq_length <= limit
    ):
        raise ConfigError(
            f"max_seq_length must be an integer from 2 (<bos> and <eos>) to the model's "
            f"max_position_embeddings={limit}, got {max_seq_length!r}"
        )
    return max_seq_length


def save_st_folder(
    model: MmBertForMaskedLM,
    path: str | Path,
    tokenizer: str | Path | PreTrainedTokenizerBase,
    *,
    max_seq_length: int | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` (as :func:`~mmbert.checkpoint.hf.save_hf_folder` takes it) as a
    sentence-transformers folder with mean pooling into ``path``; returns the folder. Texts longer than
    ``max_seq_length`` tokens (default: the model's ``max_position_embeddings``) are cut to it, ``<eos>``
    kept, as ``mmbert.encode(..., max_length=max_seq_length)`` cuts them."""
    limit = resolve_max_seq_length(model.config, max_seq_length)
    folder = save_hf_folder(model, path, tokenizer=tokenizer, frame_texts=True)
    _write_json(
        folder / MODULES_FILE,
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
        ],
    )
    _write_json(folder / TRANSFORMER_CONFIG_FILE, {"max_seq_length": limit, "do_lower_case": False})
    (folder / POOLING_DIR).mkdir(exist_ok=True)
    _write_json(
        folder / POOLING_DIR / "config.json",
        {
            "word_embedding_dimension": model.config.hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    _write_json(folder / MODEL_CONFIG_FILE, _model_config())
    return folder


def _model_config() -> dict:
    """The settings sentence-transformers reads; ``__version__`` names the libraries that wrote the weights
    (sentence-transformers, which wrote none of it, is left out: it would only warn older versions)."""
    import torch
    import transformers

    return {
        "__version__": {"pytorch": torch.__version__, "transformers": transformers.__version__},
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
