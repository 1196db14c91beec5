"""Conversion between any checkpoint this project reads and the two formats it writes for others: a Hugging
Face ``ModernBertForMaskedLM`` folder and a weights-only Lightning checkpoint (the command line is
:mod:`mmbert.cli.convert`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from mmbert.checkpoint.formats import LIGHTNING_PREFIX
from mmbert.checkpoint.hf import save_hf_folder
from mmbert.checkpoint.loading import load_model, model_from_state, open_model_reader, resolve_config
from mmbert.checkpoint.readers import CheckpointReader
from mmbert.checkpoint.shrink import shrink_state
from mmbert.model import MmBertConfig


def checkpoint_to_hf(
    ckpt_path: str | Path, out_dir: str | Path, tokenizer: str | None = None, config: str | None = None
) -> Path:
    reader = open_model_reader(ckpt_path)
    try:
        cfg = resolve_config(config) if config is not None else reader.require_config()
        return _save_hf(reader, cfg, reader.read_all(), out_dir, tokenizer)
    finally:
        reader.close()


def shrink_to_hf(source: str | Path, out_dir: str | Path, config: str, tokenizer: str | None = None) -> Path:
    """A Hugging Face folder of the narrower model ``config`` sampled from ``source`` by strided sampling
    (:mod:`mmbert.checkpoint.shrink`), with the source's tokenizer (the vocabulary is the same) unless
    ``tokenizer`` gives another."""
    reader = open_model_reader(source)
    try:
        target = resolve_config(config)
        state = shrink_state(reader.read_all(), reader.require_config(), target, origin=str(source))
        return _save_hf(reader, target, state, out_dir, tokenizer)
    finally:
        reader.close()


def _save_hf(
    reader: CheckpointReader,
    cfg: MmBertConfig,
    state: dict[str, Tensor],
    out_dir: str | Path,
    tokenizer: str | None,
) -> Path:
    """Write ``state`` as an HF folder, with the tokenizer the checkpoint holds or names unless ``tokenizer``
    gives another."""
    net = model_from_state(cfg, state, source=str(reader.path))
    own = reader.tokenizer_dir() or reader.tokenizer_source
    return save_hf_folder(net, out_dir, tokenizer=tokenizer or own)


def hf_to_checkpoint(source: str | Path, out_path: str | Path, config: str | None = None) -> Path:
    net, _ = load_model(source, config=config)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {f"{LIGHTNING_PREFIX}{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "mmbert_config": dataclasses.asdict(net.config)}, out)
    return out
