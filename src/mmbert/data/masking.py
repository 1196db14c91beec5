"""MLM masking: a ratio ``p`` of the non-special tokens is chosen; of those, 80% become ``<mask>``, 10% a
random non-special token and 10% stay. Labels hold the original ids at chosen positions, -100 elsewhere.

Masking runs in numpy with a ``numpy.random.Generator``: single-threaded (torch's intra-op threads cost more
than they save on a few thousand tokens), and its state is plain integers that checkpoints store as is.

Array suffixes: T tokens of the batch, V vocabulary, K replacement candidates.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mmbert.errors import DataError

IGNORE_INDEX = -100


def check_mask_ratio(key: str, value: float) -> float:
    """A mask ratio is a fraction in (0, 1); ``key`` names the setting in the error."""
    if not (isinstance(value, int | float) and 0.0 < value < 1.0):
        raise DataError(f"{key} must be in (0, 1), got {value!r}")
    return float(value)


def special_ids_table(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Bool[V]: ids never masked and never used as random replacements (all special/added-special tokens)."""
    vocab = len(tokenizer)
    special_V = np.zeros(vocab, dtype=bool)
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    special_V[sorted(i for i in ids if i < vocab)] = True
    return special_V


class Masker:
    def __init__(self, special_V: np.ndarray, mask_id: int) -> None:
        self.special_V = special_V
        self.candidates_K = np.flatnonzero(~special_V)
        self.mask_id = mask_id

    def __call__(
        self, ids_T: torch.Tensor, ratio: float, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) as int64 tensors; every random draw comes from ``rng``."""
        ids = ids_T.numpy()
        chosen_T = (rng.random(ids.shape) < ratio) & ~self.special_V[ids]
        how_T = rng.random(ids.shape)
        random_T = self.candidates_K[rng.integers(0, len(self.candidates_K), ids.shape)]
        labels_T = np.where(chosen_T, ids, IGNORE_INDEX)
        inputs_T = np.where(chosen_T & (how_T < 0.8), self.mask_id, ids)
        inputs_T = np.where(chosen_T & (how_T >= 0.8) & (how_T < 0.9), random_T, inputs_T)
        return torch.from_numpy(inputs_T), torch.from_numpy(labels_T)
