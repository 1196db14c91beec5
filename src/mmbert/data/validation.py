"""Fixed validation batches: per language, the same documents, packing and masks at every evaluation."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerFast

from mmbert.data.batch import assemble
from mmbert.data.masking import Masker
from mmbert.data.mix.base import Doc
from mmbert.data.packing import BestFitPacker, frame_documents
from mmbert.data.tokenizer import tokenize_documents


def build_val_batches(
    docs: Sequence[Doc],
    lang_index: int,
    num_languages: int,
    tok: PreTrainedTokenizerFast,
    masker: Masker,
    seq_len: int,
    rows_per_batch: int,
    mask_ratio: float,
    seed: int,
    lang: str,
) -> list[dict[str, Any]]:
    bodies = tokenize_documents(tok.backend_tokenizer, docs)
    packer = BestFitPacker(seq_len)
    for chunks in frame_documents(bodies, seq_len, tok.bos_token_id, tok.eos_token_id):
        for chunk in chunks:
            packer.add(max(lang_index, 0), chunk)
    rows = packer.drain()
    rng = np.random.default_rng([seed, zlib.crc32(lang.encode()), 0x76616C])
    batches = []
    for lo in range(0, len(rows), rows_per_batch):
        batch = assemble(rows[lo : lo + rows_per_batch], seq_len, tok.pad_token_id, num_languages)
        if lang_index < 0:  # a validation-only language has no slot in the training languages
            batch["lang_tokens"].zero_()
        batch["input_ids"], batch["labels"] = masker(batch["input_ids"], mask_ratio, rng)
        batches.append(batch)
    return batches


class FixedBatches(IterableDataset):
    """Yields prebuilt batches in order (iterable, so Lightning adds no distributed sampler: every rank
    evaluates the same batches)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
