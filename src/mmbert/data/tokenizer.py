"""Loading the mix's tokenizer, batched document tokenization without special tokens, and texts framed as
the training data frames them (``<bos> body <eos>``) for evaluation and fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mmbert.checkpoint.hub import resolve_tokenizer_source
from mmbert.data.paths import resolve_tokenizer
from mmbert.errors import DataError, HubError


@cache
def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer with pad/bos/eos/mask tokens, from a local folder or a hub id."""
    resolved = resolve_tokenizer(name)
    try:
        tok = AutoTokenizer.from_pretrained(resolve_tokenizer_source(resolved))
    except HubError:
        raise
    except Exception as e:  # transformers raises OSError/ValueError/HF errors for a missing tokenizer
        raise DataError(f"cannot load tokenizer {name!r} (resolved to {resolved!r}): {e}") from e
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise DataError(f"tokenizer {name!r} is not a fast tokenizer")
    missing = [t for t in ("pad", "bos", "eos", "mask") if getattr(tok, f"{t}_token_id") is None]
    if missing:
        raise DataError(f"tokenizer {name!r} lacks special tokens: {missing}")
    return tok


def encode_bodies(backend: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without any special token (the pipeline frames chunks itself)."""
    return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]


def tokenize_documents(
    backend: Tokenizer, docs: Sequence[str | np.ndarray]
) -> list[Sequence[int] | np.ndarray]:
    """Each document's token ids without special tokens, for training and validation alike: the texts are
    encoded in one batch, pre-tokenized documents pass through as they are."""
    texts = [d for d in docs if isinstance(d, str)]
    encoded = iter(encode_bodies(backend, texts) if texts else [])
    return [next(encoded) if isinstance(d, str) else d for d in docs]


def frame(tokenizer: PreTrainedTokenizerBase, body: Sequence[int], max_len: int) -> Tensor:
    """``<bos> body <eos>`` as int64, the body cut to fit ``max_len`` tokens in all."""
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3 (bos, one token, eos), got {max_len}")
    ids = [tokenizer.bos_token_id, *body[: max_len - 2], tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def encode_framed(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int) -> list[Tensor]:
    bodies = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [frame(tokenizer, body, max_len) for body in bodies]
