"""A Hugging Face model folder from a local path or a hub name (``jhu-clsp/mmBERT-base``), the one place that
reaches the hub for weights: every reader and writer then works on a local folder."""

from __future__ import annotations

from pathlib import Path

from mmbert.checkpoint.formats import CONFIG_FILE, HUB_NAME, SAFETENSORS_INDEX_FILE, TORCH_BIN_FILE

_HUB_PATTERNS = [
    CONFIG_FILE,
    "*.safetensors",
    SAFETENSORS_INDEX_FILE,
    TORCH_BIN_FILE,
    "*.json",
    "*.model",
    "*.txt",
]


def resolve_folder(path_or_hub_name: str | Path, revision: str | None = None) -> Path:
    """A local HF folder, or a hub name's snapshot (downloaded through the HF cache)."""
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
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # hub errors are many types; re-raise with what was asked for
        raise FileNotFoundError(
            f"could not get hub model {name!r} (revision {revision!r}) as a local folder or from the hub: {e}"
        ) from e
