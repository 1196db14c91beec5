"""Loading starting weights for a phase from any checkpoint format (see :mod:`mmbert.checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from mmbert.checkpoint import Format, load_weights_strict, open_model_reader
from mmbert.checkpoint.formats import find_tokenizer_files, is_hub_name
from mmbert.checkpoint.shrink import shrink_state
from mmbert.errors import CheckpointError
from mmbert.model import MmBertForMaskedLM


def load_initial_weights(net: MmBertForMaskedLM, source: str, *, strided: bool = False) -> dict | None:
    """Load weights from ``source`` (an HF folder or hub name, a Lightning ``.ckpt``, a Composer ``.pt``, a
    ``.safetensors`` file or a torch state dict) into ``net``; returns the Lightning checkpoint dict when it
    was one (``model.init_mode=full`` reads its optimizer state).

    The current phase's config wins over the source's for everything that is not a tensor (RoPE thetas,
    dropout, attention backend), which is what makes context extension a config change. Names and shapes
    must match the phase's model config exactly, unless ``strided`` (``model.init_mode=strided``): then the
    source is a wider model of the same depth and vocabulary (with its config) and every tensor is sampled
    from it (:mod:`mmbert.checkpoint.shrink`), as mmBERT-small was from base.
    """
    origin = f"model.init_from={source}"
    reader = open_model_reader(source)
    try:
        state = reader.read_all()
        if strided:
            state = shrink_state(state, reader.require_config(), net.config, origin=origin)
        load_weights_strict(net, state, origin)
    finally:
        reader.close()
    return getattr(reader, "raw", None) if reader.kind is Format.LIGHTNING else None


def init_tokenizer_source(source: str) -> str | None:
    """Where the tokenizer the ``model.init_from`` weights were trained with lives (a folder or hub name),
    or None when the source does not say."""
    if is_hub_name(source):
        return source  # a hub name: its repository holds the tokenizer
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path) if find_tokenizer_files(path) else None
    try:
        reader = open_model_reader(path)
    except CheckpointError:
        return None  # load_initial_weights reports what is wrong with the file
    try:
        return reader.tokenizer_source
    finally:
        reader.close()
