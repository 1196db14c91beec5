"""StableAdamW against a hand-written reference of the recipe's update rule."""

import pytest
import torch
from torch import nn

from mmbert.train.optim import StableAdamW, param_groups


def _reference_step(p, g, m, v, step, lr, peak_lr, betas, eps, wd):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    v_hat = v / (1 - b2**step)
    rms = torch.sqrt(torch.mean(g * g / torch.clamp(v_hat, min=eps * eps)))
    lr_t = lr / max(1.0, rms.item())
    p = p * (1 - lr_t / peak_lr * wd)
    p = p - lr_t * (m / (1 - b1**step)) / (v_hat.sqrt() + eps)
    return p, m, v


def test_stable_adamw_matches_reference_over_steps():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4, 5, dtype=torch.float64))
    ref = p.detach().clone()
    m = torch.zeros_like(ref)
    v = torch.zeros_like(ref)
    opt = StableAdamW([p], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for step in range(1, 6):
        g = torch.randn(4, 5, dtype=torch.float64) * (10.0 if step == 3 else 1.0)
        p.grad = g.clone()
        lr = 1e-2 * (0.5 if step > 2 else 1.0)
        opt.param_groups[0]["lr"] = lr
        opt.step()
        ref, m, v = _reference_step(ref, g, m, v, step, lr, 1e-2, (0.9, 0.95), 1e-8, 0.1)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-6, atol=1e-9)


def test_update_clipping_bounds_a_gradient_spike():
    torch.manual_seed(0)
    p = nn.Parameter(torch.zeros(1000))
    opt = StableAdamW([p], lr=1.0, betas=(0.9, 0.999), weight_decay=0.0)
    for _ in range(10):
        p.grad = torch.randn(1000) * 1e-3
        opt.step()
    before = p.detach().clone()
    p.grad = torch.randn(1000) * 1e3  # a spike far above the second-moment estimate
    opt.step()
    # Plain Adam would move by up to ~lr * (1-b1)/(1-b1^t) / sqrt((1-b2)) per entry; clipping keeps it small.
    assert (p.detach() - before).abs().max() < 0.2


def test_weight_decay_is_decoupled_from_lr():
    p = nn.Parameter(torch.ones(3))
    opt = StableAdamW([p], lr=1e-3, weight_decay=0.5)
    opt.param_groups[0]["lr"] = 0.5e-3  # half the peak: decay halves too, independent of the LR's size
    p.grad = torch.zeros(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 1 - 0.5 * 0.5))


def test_param_groups_exclude_norms_and_biases():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(10, 4))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2}
    assert {p.ndim for p in no_decay["params"]} == {1}
    assert len(decay["params"]) == 2 and len(no_decay["params"]) == 3


@pytest.mark.parametrize(
    "kwargs, key", [({"lr": 0}, "lr"), ({"betas": (1.0, 0.9)}, "betas"), ({"eps": 0}, "eps")]
)
def test_bad_hyperparameters_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        StableAdamW([nn.Parameter(torch.zeros(1))], **kwargs)
