"""Checkpoints in every format the project reads or writes (see :mod:`mmbert.checkpoint.formats`):
detection, safe (code-free) torch loading, lazy tensor readers, FlexBERT/Composer names, strict loading."""

from mmbert.checkpoint.formats import (
    CONFIG_FILE,
    EMBEDDING_KEY,
    LIGHTNING_PREFIX,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX_FILE,
    TIED_KEY,
    TOKENIZER_FILES,
    TORCH_BIN_FILE,
    Format,
    find_tokenizer_files,
    is_hub_name,
)
from mmbert.checkpoint.loading import (
    check_shapes,
    check_state,
    load_model,
    load_weights_strict,
    local_path,
    model_from_state,
    open_model_reader,
    resolve_config,
)
from mmbert.checkpoint.readers import (
    CheckpointReader,
    HfFolderReader,
    Rows,
    SafetensorsFileReader,
    TensorInfo,
    TorchFileReader,
    open_reader,
)
from mmbert.checkpoint.safe_load import safe_torch_load

__all__ = [
    "CONFIG_FILE",
    "EMBEDDING_KEY",
    "LIGHTNING_PREFIX",
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX_FILE",
    "TIED_KEY",
    "TOKENIZER_FILES",
    "TORCH_BIN_FILE",
    "CheckpointReader",
    "Format",
    "HfFolderReader",
    "Rows",
    "SafetensorsFileReader",
    "TensorInfo",
    "TorchFileReader",
    "check_shapes",
    "check_state",
    "find_tokenizer_files",
    "is_hub_name",
    "load_model",
    "load_weights_strict",
    "local_path",
    "model_from_state",
    "open_model_reader",
    "open_reader",
    "resolve_config",
    "safe_torch_load",
]
