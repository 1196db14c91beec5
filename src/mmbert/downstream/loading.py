"""A checkpoint of any format the project reads (:func:`mmbert.checkpoint.load_model`) -> encoder + tokenizer,
with the tokenizer checks the downstream tasks need."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mmbert.checkpoint import load_model
from mmbert.checkpoint.hub import resolve_tokenizer_source
from mmbert.errors import CheckpointNotFoundError, ConfigError
from mmbert.model import MmBertForMaskedLM


def load_encoder(
    path: str | Path, tokenizer: str | Path | None = None
) -> tuple[MmBertForMaskedLM, PreTrainedTokenizerBase]:
    """(model in fp32 on the CPU, tokenizer) of ``path`` (an HF folder or hub name, a Lightning ``.ckpt``, a
    merge output, a Composer ``.pt``); ``tokenizer`` (a folder or hub name) replaces the checkpoint's own.
    ConfigError (naming ``model.path`` / ``model.tokenizer``) when there is none."""
    source = str(path)
    try:
        model, tok = load_model(source)
    except CheckpointNotFoundError as err:
        raise ConfigError(f"model.path={source}: {err}") from err
    if tokenizer is not None:
        tok = AutoTokenizer.from_pretrained(resolve_tokenizer_source(tokenizer))
    if tok is None:
        raise ConfigError(f"model.path={source} has no tokenizer; set model.tokenizer=FOLDER_OR_HUB_NAME")
    if tok.bos_token_id is None or tok.eos_token_id is None or tok.pad_token_id is None:
        raise ConfigError(f"model.tokenizer of {source} lacks a bos, eos or pad token")
    if not tok.is_fast:
        raise ConfigError(
            f"model.tokenizer of {source} is not a fast tokenizer (offsets and word ids needed)"
        )
    return model.float().eval(), tok
