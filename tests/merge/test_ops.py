"""Pure merge operations on toy tensors, against hand-computed values and independent references."""

from __future__ import annotations

import pytest
import torch

from mmbert.merge import ops


def _reference_trim(x: torch.Tensor, k: int) -> torch.Tensor:
    # Independent of the radix select: a stable sort keeps equal magnitudes in flat order.
    order = torch.sort(-x.abs().reshape(-1), stable=True).indices[:k]
    out = torch.zeros(x.numel())
    out[order] = x.reshape(-1)[order]
    return out.reshape(x.shape)


def test_keep_count_follows_mergekit_and_keeps_at_least_one():
    assert ops.keep_count(5, 0.4) == 2
    assert ops.keep_count(100, 0.29) == 28  # int(28.999...) as in mergekit
    assert ops.keep_count(10, 1.0) == 10
    assert ops.keep_count(3, 0.1) == 1
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="density"):
            ops.keep_count(10, bad)


def test_trim_keeps_top_magnitudes_by_hand():
    d = torch.tensor([0.5, -3.0, 1.0, -0.1, 2.0])
    assert torch.equal(ops.trim_magnitude(d, 0.4), torch.tensor([0.0, -3.0, 0.0, 0.0, 2.0]))
    assert torch.equal(ops.trim_magnitude(d, 0.6), torch.tensor([0.0, -3.0, 1.0, 0.0, 2.0]))
    assert torch.equal(ops.trim_magnitude(d, 1.0), d)


def test_trim_breaks_magnitude_ties_in_flat_order():
    d = torch.tensor([[1.0, -1.0], [1.0, 3.0]])
    assert torch.equal(ops.trim_magnitude(d, 0.5), torch.tensor([[1.0, 0.0], [0.0, 3.0]]))


@pytest.mark.parametrize("density", [0.01, 0.1, 0.37, 0.5, 0.9])
def test_trim_matches_sort_reference_with_many_ties(density):
    gen = torch.Generator().manual_seed(0)
    # Few distinct magnitudes (as in bf16 deltas) so the threshold is almost always tied.
    x = torch.randint(-6, 7, (37, 29), generator=gen).float() * 0.25
    k = ops.keep_count(x.numel(), density)
    assert torch.equal(ops.trim_magnitude(x, density), _reference_trim(x, k))


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 10])
def test_chunked_select_and_trim_equal_whole_tensor(rows_per_chunk):
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(20, 8, generator=gen), torch.full((5, 8), 0.5)])  # ties across chunks
    k = 70
    chunks = list(torch.split(x, rows_per_chunk))
    select = ops.MagnitudeSelect(k)
    for _ in range(select.passes):
        for chunk in chunks:
            select.update(chunk)
        select.end_pass()
    trim = ops.MagnitudeTrim(select.threshold)
    chunked = torch.cat([trim(chunk) for chunk in chunks])
    assert torch.equal(chunked, _reference_trim(x, k))
    assert int((chunked != 0).sum()) == k


def test_select_threshold_is_exact_kth_magnitude():
    x = torch.tensor([-7.0, 0.001, 3.5, -3.5, 1e-30, 2.0, -0.0])
    for k in range(1, x.numel() + 1):
        select = ops.MagnitudeSelect(k)
        for _ in range(select.passes):
            select.update(x)
            select.end_pass()
        thr = select.threshold
        assert thr.value == float(x.abs().sort(descending=True).values[k - 1])
        assert thr.n_above == int((x.abs() > thr.value).sum())


def test_select_rejects_bad_k_and_early_reads():
    with pytest.raises(ValueError, match="k must be"):
        ops.MagnitudeSelect(0)
    select = ops.MagnitudeSelect(5)
    with pytest.raises(RuntimeError, match="both passes"):
        _ = select.threshold
    select.update(torch.ones(3))
    with pytest.raises(ValueError, match="exceeds"):
        select.end_pass()


# Trimmed task vectors of three models (columns are entries), used by the two tests below.
#   entry 0: weighted [1, -2, 1]    sum 0    -> +: keeps models 0, 2
#   entry 1: weighted [-1, 1, -2]   sum -2   -> -: keeps models 0, 2
#   entry 2: all zero                        -> nothing kept, divisor 0 -> 1
#   entry 3: weighted [0, 1.5, 0]            -> +: keeps model 1 only
#   entry 4: weighted [1, 0.5, -10] sum -8.5 -> -: mass beats the 2-to-1 vote
TRIMMED = torch.tensor(
    [
        [1.0, -1.0, 0.0, 0.0, 1.0],
        [-4.0, 2.0, 0.0, 3.0, 1.0],
        [0.5, -1.0, 0.0, 0.0, -5.0],
    ]
)
WEIGHTS = torch.tensor([1.0, 0.5, 2.0])


def test_ties_combine_normalized_by_hand():
    expected = torch.tensor([2.0 / 3.0, -1.0, 0.0, 3.0, -5.0])
    torch.testing.assert_close(ops.ties_combine(TRIMMED, WEIGHTS, normalize=True), expected)


def test_ties_combine_unnormalized_by_hand():
    expected = torch.tensor([2.0, -3.0, 0.0, 1.5, -10.0])
    torch.testing.assert_close(ops.ties_combine(TRIMMED, WEIGHTS, normalize=False), expected)


def test_ties_combine_rejects_weight_count_mismatch():
    with pytest.raises(ValueError, match="2 weights"):
        ops.ties_combine(TRIMMED, torch.tensor([1.0, 1.0]), normalize=True)


def test_ties_merge_end_to_end_by_hand():
    base = torch.ones(4)
    m1 = base + torch.tensor([0.1, -2.0, 0.3, 0.05])  # trimmed to [0, -2, 0.3, 0]
    m2 = base + torch.tensor([-0.4, -1.0, 0.2, 3.0])  # trimmed to [0, -1, 0, 3]
    # merged delta [0, -1.5, 0.3, 3]; lambda 0.5
    out = ops.ties_merge(base, [m1, m2], [1.0, 1.0], density=0.5, lam=0.5)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.25, 1.15, 2.5]))


def test_ties_single_model_full_density_is_identity():
    gen = torch.Generator().manual_seed(2)
    base, model = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    for weight in (1.0, 0.3):
        torch.testing.assert_close(ops.ties_merge(base, [model], [weight], density=1.0, lam=1.0), model)


def test_identical_models_merge_to_themselves():
    gen = torch.Generator().manual_seed(3)
    base, model = torch.randn(7, 3, generator=gen), torch.randn(7, 3, generator=gen)
    copies, weights = [model] * 3, [1.0, 0.5, 0.8]
    torch.testing.assert_close(ops.ties_merge(base, copies, weights, density=1.0), model)
    torch.testing.assert_close(ops.task_arithmetic_merge(base, copies, weights), model)
    torch.testing.assert_close(ops.linear_merge(copies, weights), model)
    torch.testing.assert_close(ops.linear_merge(copies, ops.ema_weights(3, 0.7)), model)


def test_task_arithmetic_by_hand():
    base = torch.tensor([1.0, 2.0])
    models = [torch.tensor([2.0, 2.0]), torch.tensor([1.0, 4.0])]
    # weighted sum of task vectors: 1 * [1, 0] + 3 * [0, 2] = [1, 6]
    normalized = ops.task_arithmetic_merge(base, models, [1.0, 3.0], lam=2.0, normalize=True)
    torch.testing.assert_close(normalized, torch.tensor([1.5, 5.0]))
    plain = ops.task_arithmetic_merge(base, models, [1.0, 3.0], lam=2.0, normalize=False)
    torch.testing.assert_close(plain, torch.tensor([3.0, 14.0]))


def test_task_arithmetic_leaves_zero_weight_sum_undivided():
    deltas = torch.tensor([[1.0], [2.0]])
    out = ops.task_arithmetic_combine(deltas, torch.tensor([1.0, -1.0]), normalize=True)
    torch.testing.assert_close(out, torch.tensor([-1.0]))


def test_linear_by_hand_and_one_hot():
    models = [torch.tensor([0.0, 4.0]), torch.tensor([2.0, 8.0]), torch.tensor([-1.0, 1.0])]
    torch.testing.assert_close(ops.linear_merge(models, [1.0, 3.0, 0.0]), torch.tensor([1.5, 7.0]))
    plain = ops.linear_merge(models, [1.0, 3.0, 0.0], normalize=False)
    torch.testing.assert_close(plain, torch.tensor([6.0, 28.0]))
    for i in range(3):
        one_hot = [float(i == j) for j in range(3)]
        assert torch.equal(ops.linear_merge(models, one_hot), models[i])
    with pytest.raises(ValueError, match="sum to 0"):
        ops.linear_merge(models, [1.0, -1.0, 0.0])


def test_ema_weights_by_hand():
    torch.testing.assert_close(
        torch.tensor(ops.ema_weights(3, 0.5)), torch.tensor([0.25, 0.5, 1.0]) / 1.75, rtol=0, atol=1e-7
    )
    assert ops.ema_weights(4, 0.0) == [0.0, 0.0, 0.0, 1.0]
    assert ops.ema_weights(1, 0.9) == [1.0]
    with pytest.raises(ValueError, match="decay"):
        ops.ema_weights(3, 1.0)


def test_ema_decay_zero_picks_newest():
    models = [torch.full((3,), float(i)) for i in range(4)]
    assert torch.equal(ops.linear_merge(models, ops.ema_weights(4, 0.0)), models[-1])


def test_half_life():
    assert ops.decay_from_half_life(1.0) == 0.5
    decay = ops.decay_from_half_life(3.0)
    assert decay**3 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="half_life"):
        ops.decay_from_half_life(0.0)
