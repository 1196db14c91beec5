"""The one place that knows checkpoint formats: any checkpoint the project writes or reads -> encoder + tokenizer.

An HF folder (training's ``hf/``, a merge output) or a hub name goes through :func:`mmbert.hf.load_hf_folder`;
a Lightning ``.ckpt`` through :mod:`mmbert.train.init`'s helpers, with the tokenizer the run recorded.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mmbert.config import ConfigError
from mmbert.hf import load_hf_folder
from mmbert.model import MmBertConfig, MmBertForMaskedLM


def load_encoder(
    path: str | Path, tokenizer: str | Path | None = None
) -> tuple[MmBertForMaskedLM, PreTrainedTokenizerBase]:
    """(model in fp32 on the CPU, tokenizer) of ``path``; ``tokenizer`` (a folder or hub name) replaces the
    checkpoint's own. ConfigError (naming ``model.path`` / ``model.tokenizer``) when there is none."""
    from mmbert.train.init import (
        is_lightning_checkpoint,
        load_lightning_checkpoint,
        load_weights_strict,
        state_dict_from_checkpoint,
    )

    source = str(path)
    if is_lightning_checkpoint(source):
        ckpt = load_lightning_checkpoint(source)
        if "mmbert_config" not in ckpt:
            raise ConfigError(f"model.path={source}: no 'mmbert_config' entry; not written by this project")
        model = MmBertForMaskedLM(MmBertConfig.coerce(ckpt["mmbert_config"]))
        load_weights_strict(model, state_dict_from_checkpoint(ckpt, source), source)
        own = ckpt.get("mmbert_tokenizer")
        tok = AutoTokenizer.from_pretrained(own) if own is not None and tokenizer is None else None
    else:
        try:
            model, tok = load_hf_folder(source)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise ConfigError(f"model.path={source}: {err}") from err
    if tokenizer is not None:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    if tok is None:
        raise ConfigError(f"model.path={source} has no tokenizer; set model.tokenizer=FOLDER_OR_HUB_NAME")
    if tok.bos_token_id is None or tok.eos_token_id is None or tok.pad_token_id is None:
        raise ConfigError(f"model.tokenizer of {source} lacks a bos, eos or pad token")
    if not tok.is_fast:
        raise ConfigError(
            f"model.tokenizer of {source} is not a fast tokenizer (offsets and word ids needed)"
        )
    return model.float().eval(), tok
