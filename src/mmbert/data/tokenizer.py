"""Loading the mix's tokenizer, and batched document tokenization without special tokens."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmbert.data.paths import resolve_tokenizer
from mmbert.errors import DataError


@cache
def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer with pad/bos/eos/mask tokens, from a local folder or a hub id."""
    resolved = resolve_tokenizer(name)
    try:
        tok = AutoTokenizer.from_pretrained(resolved)
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
