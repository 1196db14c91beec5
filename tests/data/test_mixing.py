"""Temperature weights, token-share sampling, chunking and best-fit packing."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import MLMDataModule, SampleMix, temperature_weights
from mmbert.data.packing import BestFitPacker, frame_documents
from mmbert.data.sampling import TokenSampler
from mmbert.errors import DataError


def test_temperature_weights_exact_values() -> None:
    # 1, 4, 16 tokens at tau 0.5 -> 1, 2, 4 -> 1/7, 2/7, 4/7
    w = temperature_weights({"a": 1, "b": 4, "c": 16}, 0.5)
    assert w == pytest.approx({"a": 1 / 7, "b": 2 / 7, "c": 4 / 7}, rel=1e-12)
    # tau 1 keeps the natural token shares
    assert temperature_weights({"a": 30, "b": 10}, 1.0) == pytest.approx({"a": 0.75, "b": 0.25}, rel=1e-12)
    # 8 and 1000 at tau 1/3 -> 2 and 10
    assert temperature_weights({"x": 8, "y": 1000}, 1 / 3) == pytest.approx(
        {"x": 1 / 6, "y": 5 / 6}, rel=1e-12
    )


def test_temperature_weights_at_release_scale_flatten_the_mixture() -> None:
    counts = {"eng": 686_423_109_477, "rus": 115_435_806_777, "fao": 285_200_391}
    w = {tau: temperature_weights(counts, tau) for tau in (0.7, 0.5, 0.3)}
    for tau, q in w.items():
        assert math.fsum(q.values()) == pytest.approx(1.0, abs=1e-15)
        ratio = (counts["eng"] / counts["fao"]) ** tau
        assert q["eng"] / q["fao"] == pytest.approx(ratio, rel=1e-12)
    assert w[0.7]["fao"] < w[0.5]["fao"] < w[0.3]["fao"]


@pytest.mark.parametrize("tau", [0.0, -0.5, 1.5, float("nan"), "0.5"])
def test_tau_outside_the_unit_interval_is_rejected(tau: object) -> None:
    with pytest.raises(DataError, match="tau must be in"):
        temperature_weights({"a": 1}, tau)  # type: ignore[arg-type]


def test_non_positive_counts_are_rejected() -> None:
    with pytest.raises(DataError, match="positive"):
        temperature_weights({"a": 10, "b": 0}, 0.5)


def test_sampler_token_shares_follow_weights_despite_document_lengths() -> None:
    # Mean document lengths differ 100x; drawing by documents would give "short" almost nothing.
    q = np.array([0.5, 0.3, 0.2])
    mean_len = np.array([10.0, 200.0, 1000.0])
    sampler = TokenSampler(q, seed=(3,))
    rng = np.random.default_rng(0)
    tokens = np.zeros(3)
    for _ in range(400):
        for i in sampler.draw(64):
            n = max(1, int(rng.exponential(mean_len[i])))
            sampler.observe(int(i), n)
            tokens[i] += n
    share = tokens / tokens.sum()
    assert np.allclose(share, q, rtol=0.06), share


def test_sampler_is_deterministic_and_resumable() -> None:
    a = TokenSampler([0.2, 0.8], seed=(1, 2))
    b = TokenSampler([0.2, 0.8], seed=(1, 2))
    for s in (a, b):
        for i in s.draw(10):
            s.observe(int(i), 5 + int(i))
    c = TokenSampler([0.2, 0.8], seed=(9,), state=a.state())  # the state carries the RNG and statistics
    x = a.draw(50)
    np.testing.assert_array_equal(x, b.draw(50))
    np.testing.assert_array_equal(x, c.draw(50))


def test_pipeline_realised_token_shares_match_q_over_a_long_stream() -> None:
    dm = MLMDataModule(
        SampleMix(subset="decay-all"), seq_len=256, rows_per_device=16, tau=0.5, mask_ratio=0.3, seed=4
    )
    batches = dm.train_batches()
    for _ in range(100):  # 100 x 16 x 256 = 410k token slots, about the size of the whole corpus
        next(batches)
    report = dm.mixture_report()["languages"]
    total = sum(v["realised_tokens"] for v in report.values())
    for lang, v in report.items():
        share = v["realised_tokens"] / total
        assert share == pytest.approx(v["weight"], rel=0.12), lang


def test_chunks_are_framed_and_bounded() -> None:
    body = list(range(100, 125))
    short, long, empty, array = frame_documents(
        [[7, 8], body, [], np.asarray(body)], seq_len=10, bos_id=2, eos_id=1
    )
    assert [c.tolist() for c in short] == [[2, 7, 8, 1]]
    assert [len(c) for c in long] == [10, 10, 10, 3]  # 25 = 8 + 8 + 8 + 1 body tokens
    assert all(c[0] == 2 and c[-1] == 1 for c in long)
    assert np.concatenate([c[1:-1] for c in long]).tolist() == body
    assert [c.tolist() for c in empty] == [[2, 1]]
    assert [c.tolist() for c in array] == [c.tolist() for c in long]


def test_best_fit_packing_is_complete_bounded_and_oldest_first() -> None:
    rng = np.random.default_rng(1)
    packer = BestFitPacker(seq_len=64)
    added = []
    for i in range(300):
        chunk = np.full(int(rng.integers(1, 65)), i, dtype=np.int32)
        packer.add(i % 3, chunk)
        added.append(i)
    rows = []
    while len(packer):
        oldest = int(packer.pending[0][1][0])
        row = packer.pop_row()
        assert int(row.ids[0]) == oldest  # the oldest chunk opens the row
        assert row.num_tokens <= 64 and row.seg_lens.sum() == row.num_tokens
        rows.append(row)
    seen = sorted(int(r.ids[o]) for r in rows for o in np.cumsum([0, *r.seg_lens[:-1]]))
    assert seen == added
    # a full buffer packs densely
    fill = sum(r.num_tokens for r in rows[:-10]) / (64 * len(rows[:-10]))
    assert fill > 0.9


def test_best_fit_prefers_the_largest_chunk_that_fits() -> None:
    packer = BestFitPacker(seq_len=10)
    for n in (6, 3, 4, 2):
        packer.add(0, np.full(n, n, dtype=np.int32))
    row = packer.pop_row()
    assert row.seg_lens.tolist() == [6, 4]
    assert packer.pop_row().seg_lens.tolist() == [3, 2]
