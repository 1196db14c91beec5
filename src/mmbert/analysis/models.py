"""Loading checkpoints one at a time, and the batching every analysis shares.

Inputs are framed like the training data (:func:`mmbert.data.tokenizer.encode_framed`), so that evaluation
does not depend on whether a tokenizer's post-processor adds special tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from mmbert.checkpoint import load_model
from mmbert.model import IGNORE_INDEX, MmBertForMaskedLM


def load_checkpoint(
    path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None, device: str | torch.device = "cpu"
) -> tuple[MmBertForMaskedLM, PreTrainedTokenizerBase]:
    """Model in eval mode on ``device`` and its tokenizer (the checkpoint's own, else ``tokenizer``); any
    checkpoint format (:func:`mmbert.checkpoint.load_model`)."""
    model, own = load_model(path)
    tok = own if own is not None else tokenizer
    if tok is None:
        raise ValueError(f"{path} has no tokenizer files; pass a tokenizer")
    if tok.mask_token_id is None or tok.bos_token_id is None or tok.eos_token_id is None:
        raise ValueError(f"the tokenizer of {path} lacks a mask, bos or eos token")
    return model.to(device).eval(), tok


def iter_checkpoints(
    checkpoints: Mapping[str, str | Path],
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[str, MmBertForMaskedLM, PreTrainedTokenizerBase]]:
    """``(name, model, tokenizer)`` for each checkpoint, each loaded only when the iteration reaches it."""
    for name, path in checkpoints.items():
        yield name, *load_checkpoint(path, tokenizer, device)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a is b or (
        len(a) == len(b) and a.mask_token_id == b.mask_token_id and a.get_vocab() == b.get_vocab()
    )


def pad(seqs: Sequence[Tensor], value: int) -> Tensor:
    """[B, L] right-padded stack of 1-D tensors."""
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value)


def padded_batch(
    ids: Sequence[Tensor],
    pad_id: int,
    labels: Sequence[Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(input_ids [B, L], attention_mask [B, L], labels [B, L] with -100 on padding, or None)."""
    lengths = torch.tensor([len(s) for s in ids])
    mask_BL = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    labels_BL = None if labels is None else pad(labels, IGNORE_INDEX).to(device)
    return pad(ids, pad_id).to(device), mask_BL.to(device), labels_BL


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of similar lengths (less padding), deterministically."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def mlm_logits(model: MmBertForMaskedLM, hidden: Tensor) -> Tensor:
    """Vocabulary logits of selected hidden states only: the full [B, L, V] logits of a 256k-token vocabulary
    would not fit in memory for a batch of long documents."""
    return model.decoder(model.head(hidden))
