"""Schedules at exact points (units: tokens)."""

import pytest

from mmbert.train.schedules import BatchSizeWarmup, LRSchedule, MaskSchedule


def test_constant_with_warmup_exact_points():
    s = LRSchedule(kind="constant", warmup_tokens=1000, total_tokens=10_000)
    assert s(0) == 0.0
    assert s(250) == 0.25
    assert s(999) == 0.999
    assert s(1000) == 1.0
    assert s(10_000) == 1.0
    assert s(50_000) == 1.0


def test_warmup_stable_linear_decay_exact_points():
    s = LRSchedule(kind="linear", warmup_tokens=100, total_tokens=1000, decay_tokens=400, alpha_f=0.1)
    assert s.decay_start == 600
    assert s(50) == 0.5
    assert s(600) == 1.0
    assert s(800) == pytest.approx(0.55)
    assert s(1000) == pytest.approx(0.1)
    assert s(2000) == pytest.approx(0.1)


def test_one_minus_sqrt_decay_exact_points():
    s = LRSchedule(kind="one_minus_sqrt", total_tokens=100, decay_tokens=100, alpha_f=0.02)
    assert s(0) == 1.0
    assert s(25) == pytest.approx(0.51)
    assert s(64) == pytest.approx(0.216)
    assert s(100) == pytest.approx(0.02)
    # 1-sqrt falls faster than linear early on, and both end at alpha_f.
    lin = LRSchedule(kind="linear", total_tokens=100, decay_tokens=100, alpha_f=0.02)
    assert s(10) < lin(10)


def test_warmup_then_a_decay_window_at_the_end():
    s = LRSchedule(kind="one_minus_sqrt", warmup_tokens=10, total_tokens=100, decay_tokens=50, alpha_f=0.0)
    assert [s(t) for t in (5, 10, 50)] == [0.5, 1.0, 1.0]
    assert s(75) == pytest.approx(0.29289321881345254)  # 1 - sqrt(1/2)
    assert s(100) == 0.0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"kind": "cosine"}, "kind"),
        ({"alpha_f": 1.5}, "alpha_f"),
        ({"warmup_tokens": -1}, "warmup_tokens"),
        ({"kind": "linear", "total_tokens": 10, "decay_tokens": 20}, "decay_tokens"),
    ],
)
def test_lr_schedule_rejects_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LRSchedule(**kwargs)


def test_mask_schedule():
    assert MaskSchedule(0.3)(0) == 0.3
    assert MaskSchedule(0.3)(10**12) == 0.3
    s = MaskSchedule(0.3, 0.15, tokens=1000)
    assert s(0) == 0.3
    assert s(500) == pytest.approx(0.225)
    assert s(1000) == pytest.approx(0.15)
    assert s(5000) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="start"):
        MaskSchedule(1.0)
    with pytest.raises(ValueError, match="end"):
        MaskSchedule(0.3, 0.0)


def test_batch_size_warmup_steps_evenly():
    s = BatchSizeWarmup(min_rows=48, max_rows=4608, warmup_tokens=800, num_steps=8)
    assert s(0) == 48
    assert s(99) == 48
    assert s(100) == 618
    assert s(400) == 2328
    assert s(799) == 4038
    assert s(800) == 4608
    # On 8 devices a stage rounds down to a multiple of 8; the full batch must split evenly.
    assert [s(t, devices=8) for t in (0, 100, 400, 799, 800)] == [48, 616, 2328, 4032, 4608]
    assert BatchSizeWarmup(min_rows=2, max_rows=64, warmup_tokens=8)(0, devices=16) == 16
    with pytest.raises(ValueError, match="does not split over 5 devices"):
        s(0, devices=5)
    assert BatchSizeWarmup(min_rows=8, max_rows=8)(0) == 8
    with pytest.raises(ValueError, match="min_rows"):
        BatchSizeWarmup(min_rows=10, max_rows=5)
