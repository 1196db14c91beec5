"""Framing task inputs like the training data: ``<bos> text <eos>``, pairs as ``<bos> a <eos> b <eos>``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from mmbert.data.tokenizer import encode_framed


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], pairs: Sequence[str | None] | None, max_len: int
) -> list[Tensor]:
    """Framed token ids of each text (and its pair, if any), cut to ``max_len`` tokens: a pair loses tokens
    from the longer of its two texts first (``_truncate_longest_first``)."""
    if pairs is None or all(p is None for p in pairs):
        return encode_framed(tokenizer, texts, max_len)
    firsts = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    seconds = tokenizer([p or "" for p in pairs], add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out = []
    for a, b, pair in zip(firsts, seconds, pairs, strict=True):
        if pair is None:
            out.append(torch.tensor([bos, *a[: max_len - 2], eos]))
            continue
        a, b = _truncate_longest_first(list(a), list(b), max_len - 3)
        out.append(torch.tensor([bos, *a, eos, *b, eos]))
    return out


def _truncate_longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Cut to ``budget`` tokens in all as transformers' ``truncation="longest_first"`` does, so that a pair
    is cut as when fine-tuning with the Hugging Face tokenizer: the shorter text keeps up to half the budget
    (rounded down; on a tie the first text counts as the shorter), the longer one the rest."""
    if len(a) + len(b) <= budget:
        return a, b
    if len(a) > len(b):
        kept_b = min(len(b), budget // 2)
        return a[: budget - kept_b], b[:kept_b]
    kept_a = min(len(a), budget // 2)
    return a[:kept_a], b[: budget - kept_a]
