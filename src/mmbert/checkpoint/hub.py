"""A Hugging Face model folder or tokenizer from a local path or a hub name (``jhu-clsp/mmBERT-base``), the one
place that reaches the hub for weights and tokenizers: every reader and writer then works on a local folder.
Hub names are fetched once (:func:`mmbert.hub.model_folder`: retried, cached, kept in the run folder)."""

from __future__ import annotations

from pathlib import Path

from mmbert.checkpoint.formats import (
    CONFIG_FILE,
    HUB_NAME,
    SAFETENSORS_INDEX_FILE,
    TOKENIZER_FILES,
    TORCH_BIN_FILE,
)
from mmbert.errors import HubError
from mmbert.hub import model_folder

_HUB_PATTERNS = (
    CONFIG_FILE,
    "*.safetensors",
    SAFETENSORS_INDEX_FILE,
    TORCH_BIN_FILE,
    "*.json",
    "*.model",
    "*.txt",
)
# A tokenizer alone: its files, and the model config AutoTokenizer reads when tokenizer_config.json names no class.
_TOKENIZER_PATTERNS = (*TOKENIZER_FILES, CONFIG_FILE)


def _fetch(name: str, revision: str | None, patterns: tuple[str, ...]) -> Path:
    try:
        return model_folder(name, revision, patterns)
    except HubError:
        raise
    except Exception as e:  # offline without a cached copy, a broken cache, ...: name what was asked for
        raise FileNotFoundError(
            f"could not get hub model {name!r} (revision {revision!r}) as a local folder or from the hub: {e}"
        ) from e


def resolve_folder(path_or_hub_name: str | Path, revision: str | None = None) -> Path:
    """A local HF folder, or a hub name's snapshot."""
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
    if not HUB_NAME.match(name):
        raise FileNotFoundError(f"{name!r} is neither a local folder nor a hub name like 'org/model'")
    return _fetch(name, revision, _HUB_PATTERNS)


def resolve_tokenizer_source(name: str | Path) -> Path:
    """A local tokenizer folder or ``.json`` file as given, or a hub name's tokenizer files as a folder."""
    local = Path(name).expanduser()
    if local.exists() or not HUB_NAME.match(str(name)):
        return local
    return _fetch(str(name), None, _TOKENIZER_PATTERNS)
