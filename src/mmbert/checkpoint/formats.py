"""Every checkpoint format the project reads or writes: file names, tokenizer files, key prefixes, and how to
tell the formats apart.

| format | what | tensor names |
|---|---|---|
| ``hf`` | Hugging Face folder: config.json + model.safetensors (or a sharded index, or pytorch_model.bin) | HF ModernBERT |
| ``lightning`` | this project's training checkpoint (``.ckpt``; ``state_dict`` + ``mmbert_config``) | ``net.`` + HF |
| ``composer`` | Composer checkpoint of FlexBERT (``.pt``; ``state["model"]``), as the mmBERT authors released | FlexBERT |
| ``safetensors`` | a bare safetensors state dict | HF |
| ``state_dict`` | a bare ``torch.save`` state dict (``.pt``/``.pth``/``.bin``) | HF |

The project's own parameter names are transformers' ModernBERT names, so HF names are the common currency.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path

from mmbert.errors import CheckpointError, CheckpointNotFoundError


class Format(str, Enum):
    HF = "hf"
    LIGHTNING = "lightning"
    COMPOSER = "composer"
    SAFETENSORS = "safetensors"
    STATE_DICT = "state_dict"


CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_BIN_FILE = "pytorch_model.bin"
# A folder holds a tokenizer when it has one of these; the rest travel with it when it is copied.
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json")
TOKENIZER_FILES = (
    *TOKENIZER_MARKERS,
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
# The decoder weight is the token embedding (tied): files may leave it out, and it is never written.
TIED_KEY = "decoder.weight"
EMBEDDING_KEY = "model.embeddings.tok_embeddings.weight"
LIGHTNING_PREFIX = "net."
LIGHTNING_SUFFIXES = (".ckpt",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# transformers 5 saves a fast tokenizer's class as "TokenizersBackend", which transformers 4 cannot load;
# every version from 4.48.3 (the oldest tested) on loads "PreTrainedTokenizerFast" as the same tokenizer.
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
_TRANSFORMERS5_TOKENIZER_CLASS = "TokenizersBackend"
# What ModernBERT takes, as the released mmBERT tokenizers say: without it transformers 4's
# PreTrainedTokenizerFast also returns token_type_ids, which `model(**tokenizer(texts))` does not accept.
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


def make_tokenizer_config_portable(folder: Path) -> None:
    """Rewrite ``folder``'s tokenizer_config.json so that transformers 4 and 5 load the same tokenizer with the
    same outputs: a class name both know, and ModernBERT's input names."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == _TRANSFORMERS5_TOKENIZER_CLASS:
        config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    config["model_input_names"] = MODEL_INPUT_NAMES
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def find_tokenizer_files(folder: Path) -> list[Path]:
    """Tokenizer files in a folder; empty unless it holds a tokenizer.json or tokenizer_config.json."""
    if not any((folder / name).is_file() for name in TOKENIZER_MARKERS):
        return []
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def is_hub_name(source: str | Path) -> bool:
    """A name like ``jhu-clsp/mmBERT-base`` that is not a local path."""
    return not Path(source).expanduser().exists() and bool(HUB_NAME.match(str(source)))


def format_of_path(path: Path) -> Format | None:
    """The format a path's kind and name imply, or None for a torch file whose content decides (``.pt``,
    ``.pth``, ``.bin``: Lightning, Composer or a bare state dict). CheckpointError for anything else."""
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{path} is a folder without {CONFIG_FILE}: not a Hugging Face model folder"
            )
        return Format.HF
    if not path.exists():
        raise CheckpointNotFoundError(f"input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return Format.SAFETENSORS
    if suffix in LIGHTNING_SUFFIXES:
        return Format.LIGHTNING
    if suffix in TORCH_SUFFIXES:
        return None
    raise CheckpointError(
        f"input {path} is not a checkpoint this project reads: expected a Hugging Face folder, a Lightning "
        f".ckpt, a Composer .pt, a .safetensors file or a torch state dict ({', '.join(TORCH_SUFFIXES)})"
    )


def format_of_content(obj: object, path: Path) -> Format:
    """Tell a loaded torch file's format by its top-level structure."""
    if isinstance(obj, dict):
        if isinstance(obj.get("state"), dict) and "model" in obj["state"]:
            return Format.COMPOSER
        if "state_dict" in obj:
            return Format.LIGHTNING
        if obj and all(_is_tensor(v) for v in obj.values()):
            return Format.STATE_DICT
    raise CheckpointError(
        f"{path}: neither a Lightning checkpoint ('state_dict'), a Composer checkpoint (state['model']) nor "
        "a state dict of tensors"
    )


def _is_tensor(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor)
