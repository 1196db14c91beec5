"""Strict loading of any checkpoint into :class:`MmBertForMaskedLM`."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mmbert.checkpoint.formats import CONFIG_FILE, EMBEDDING_KEY, TIED_KEY, find_tokenizer_files, is_hub_name
from mmbert.checkpoint.hf_config import config_from_hf_dict
from mmbert.checkpoint.hub import resolve_folder, resolve_tokenizer_source
from mmbert.checkpoint.readers import CheckpointReader, open_reader
from mmbert.errors import CheckpointError, HubError
from mmbert.model import MmBertConfig, MmBertForMaskedLM

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:8])
    return f"[{shown}{f', ... ({len(names) - 8} more)' if len(names) > 8 else ''}]"


def check_shapes(
    expected: Mapping[str, tuple[int, ...]], shapes: Mapping[str, Sequence[int]], source: str
) -> None:
    """Every expected tensor present (the tied decoder may be left out), none unexpected, every shape right;
    errors name the first tensor at fault. Shapes only, so a lazily opened checkpoint is checked unread."""
    missing = sorted(set(expected) - set(shapes) - {TIED_KEY})
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"state dict from {source} does not match the model: missing {_names(missing)}, "
            f"unexpected {_names(unexpected)}"
        )
    for key, shape in shapes.items():
        if tuple(shape) != tuple(expected[key]):
            raise CheckpointError(
                f"{key} from {source} has shape {tuple(shape)}, the model needs {tuple(expected[key])}"
            )


def check_state(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Tensor], source: str) -> None:
    """:func:`check_shapes`, and a decoder that is given equal to the embedding."""
    check_shapes(expected, {key: tensor.shape for key, tensor in state.items()}, source)
    if TIED_KEY in state and not torch.equal(state[TIED_KEY], state[EMBEDDING_KEY]):
        raise CheckpointError(
            f"{TIED_KEY} from {source} differs from {EMBEDDING_KEY}: untied decoders are unsupported"
        )


def model_from_state(cfg: MmBertConfig, state: Mapping[str, Tensor], *, source: str) -> MmBertForMaskedLM:
    """Build the model on meta and assign ``state`` (no init, no copy); all or nothing."""
    with torch.device("meta"):
        model = MmBertForMaskedLM(cfg)
    check_state({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)
    model.load_state_dict({k: v for k, v in state.items() if k != TIED_KEY}, strict=False, assign=True)
    model.tie_weights()
    return model


def load_weights_strict(net: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Copy ``state`` into ``net``; any missing, unexpected or mis-shaped tensor is an error naming it."""
    check_state({k: tuple(v.shape) for k, v in net.state_dict().items()}, state, source)
    net.load_state_dict({k: v for k, v in state.items() if k != TIED_KEY}, strict=False)


def local_path(path_or_hub_name: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint path: the path itself, or a hub name's snapshot in the HF cache."""
    if is_hub_name(path_or_hub_name):
        return resolve_folder(path_or_hub_name, revision)
    return Path(path_or_hub_name).expanduser()


def resolve_config(config: MmBertConfig | Mapping | str | Path) -> MmBertConfig:
    """An architecture given by the user for a file that carries none: an MmBertConfig (or its dict), an HF
    config.json, an HF folder or a hub name (e.g. ``jhu-clsp/mmBERT-base``)."""
    if isinstance(config, MmBertConfig | Mapping):
        return MmBertConfig.coerce(config)
    path = local_path(config)
    file = path / CONFIG_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"config {config}: no such config.json, model folder or hub name")
    return config_from_hf_dict(json.loads(file.read_text()), source=str(file))


def open_model_reader(path_or_hub_name: str | Path, revision: str | None = None) -> CheckpointReader:
    return open_reader(local_path(path_or_hub_name, revision))


def load_model(
    path_or_hub_name: str | Path,
    *,
    config: MmBertConfig | Mapping | str | Path | None = None,
    revision: str | None = None,
) -> tuple[MmBertForMaskedLM, PreTrainedTokenizerBase | None]:
    """Model (fp32, CPU, eval mode) and tokenizer (None if the checkpoint names none that can be loaded) from
    any supported checkpoint: an HF folder or hub name, a Lightning ``.ckpt``, a Composer ``.pt``, a
    ``.safetensors`` file or a torch state dict. ``config`` gives the architecture of a file that carries
    none (a bare state dict; a Composer file without its FlexBERT config). Strict: a missing, unexpected or
    mis-shaped tensor is an error naming it."""
    reader = open_model_reader(path_or_hub_name, revision)
    try:
        cfg = resolve_config(config) if config is not None else reader.require_config()
        tokenizer = load_tokenizer_of(reader, cfg)
        model = model_from_state(cfg, reader.read_all(), source=str(reader.path))
    finally:
        reader.close()
    return model.eval(), tokenizer


def load_tokenizer_of(reader: CheckpointReader, cfg: MmBertConfig) -> PreTrainedTokenizerBase | None:
    """The tokenizer a checkpoint holds or names; its size must fit the vocabulary."""
    folder = reader.tokenizer_dir()
    source = str(folder) if folder is not None else reader.tokenizer_source
    if source is None:
        return None
    local = Path(source).expanduser()
    if local.is_dir() and not find_tokenizer_files(local):
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_source(source))
    except (OSError, HubError) as err:  # a hub name that is not cached and no network, or not on the Hub
        log.warning("tokenizer %s of %s could not be loaded: %s", source, reader.path, err)
        return None
    if len(tokenizer) > cfg.vocab_size:
        raise CheckpointError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size={cfg.vocab_size} ({reader.path})"
        )
    return tokenizer
