"""Conversion between any checkpoint this project reads and the formats it writes for others: a Hugging Face
``ModernBertForMaskedLM`` folder, a sentence-transformers folder and a weights-only Lightning checkpoint (the
command line is :mod:`mmbert.cli.convert`)."""

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
from mmbert.checkpoint.st import resolve_max_seq_length, save_st_folder
from mmbert.errors import CheckpointError
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


def checkpoint_to_st(
    ckpt_path: str | Path,
    out_dir: str | Path,
    tokenizer: str | None = None,
    config: str | None = None,
    max_seq_length: int | None = None,
) -> Path:
    """A sentence-transformers folder (:mod:`mmbert.checkpoint.st`) of the checkpoint, with the tokenizer it
    holds or names unless ``tokenizer`` gives another; texts are cut to ``max_seq_length`` tokens (default the
    model's ``max_position_embeddings``)."""
    reader = open_model_reader(ckpt_path)
    try:
        cfg = resolve_config(config) if config is not None else reader.require_config()
        # Settings and tokenizer are checked before the weights are read: a big checkpoint takes a while.
        resolve_max_seq_length(cfg, max_seq_length)
        tok = _tokenizer_of(reader, tokenizer)
        if tok is None:
            raise CheckpointError(
                f"{reader.path} names no tokenizer, and a sentence-transformers folder needs one: "
                "pass --tokenizer"
            )
        net = model_from_state(cfg, reader.read_all(), source=str(reader.path))
        return save_st_folder(net, out_dir, tok, max_seq_length=max_seq_length)
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
    gives another. The tokenizer frames texts as the model was trained on them (``<bos> body <eos>``), so
    that ``tokenizer(texts)``, transformers' pipelines and sentence-transformers give the model's inputs."""
    net = model_from_state(cfg, state, source=str(reader.path))
    return save_hf_folder(net, out_dir, tokenizer=_tokenizer_of(reader, tokenizer), frame_texts=True)


def _tokenizer_of(reader: CheckpointReader, tokenizer: str | None) -> str | None:
    """``tokenizer`` if given, else the tokenizer folder the checkpoint holds or the source it names."""
    own = reader.tokenizer_dir() or reader.tokenizer_source
    return tokenizer or (str(own) if own is not None else None)


def hf_to_checkpoint(source: str | Path, out_path: str | Path, config: str | None = None) -> Path:
    net, _ = load_model(source, config=config)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {f"{LIGHTNING_PREFIX}{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "mmbert_config": dataclasses.asdict(net.config)}, out)
    return out
