"""MLM masking statistics: ratio, 80/10/10 split, special tokens untouched."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import load_tokenizer
from mmbert.data.masking import IGNORE_INDEX, Masker, special_ids_table


@pytest.fixture(scope="module")
def masker() -> Masker:
    tok = load_tokenizer("data/tokenizer")
    return Masker(special_ids_table(tok), tok.mask_token_id)


def test_special_table_covers_the_tokenizer_specials(masker: Masker) -> None:
    assert np.flatnonzero(masker.special_V).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_masking_statistics(masker: Masker, ratio: float) -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(masker.special_V), (400_000,), generator=g)
    ids[::7] = 2  # plenty of special tokens
    ids[3::11] = 0
    special = torch.from_numpy(masker.special_V[ids.numpy()])
    inputs, labels = masker(ids, ratio, np.random.default_rng(1))
    chosen = labels != IGNORE_INDEX
    n_eligible = int((~special).sum())
    n = int(chosen.sum())
    # ratio of the non-special tokens, within 5 binomial standard deviations
    assert abs(n - ratio * n_eligible) < 5 * (n_eligible * ratio * (1 - ratio)) ** 0.5
    assert not chosen[special].any()
    assert torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    masked = inputs[chosen] == masker.mask_id
    kept = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~kept
    for frac, want in ((masked, 0.8), (replaced, 0.1)):
        got = float(frac.float().mean())
        assert abs(got - want) < 5 * (want * (1 - want) / n) ** 0.5 + 1e-3
    # a random replacement can equal the original by chance (1/vocab): "kept" is 10% plus that
    assert float(kept.float().mean()) == pytest.approx(0.1, abs=0.01)
    assert not masker.special_V[inputs[chosen][replaced].numpy()].any()


def test_masking_is_reproducible_from_the_generator(masker: Masker) -> None:
    ids = torch.randint(5, 8192, (5000,), generator=torch.Generator().manual_seed(3))
    a = masker(ids, 0.3, np.random.default_rng(7))
    b = masker(ids, 0.3, np.random.default_rng(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
