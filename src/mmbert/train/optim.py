"""StableAdamW (ModernBERT's optimizer) and parameter grouping.

StableAdamW is AdamW with two changes: each tensor's step size is scaled down when its gradient is large
relative to the second-moment estimate (update clipping, which is why the recipe needs no gradient
clipping), and weight decay is fully decoupled from the learning rate: it is scaled by ``lr_t / peak_lr``
rather than by ``lr_t`` itself, so changing the peak LR does not change the effective decay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices and embeddings decay; norms and biases (tensors of rank < 2) do not."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class StableAdamW(torch.optim.Optimizer):
    """AdamW moments with per-tensor update clipping and LR-decoupled weight decay.

    ``peak_lr`` of each group is the LR it was created with; schedules change ``lr`` only, so the weight
    decay multiplier ``1 - (lr / peak_lr) * weight_decay`` follows the schedule's shape.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 8e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"optimizer.lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"optimizer.betas must be in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"optimizer.eps must be > 0, got {eps}")
        if weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "peak_lr": lr}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr, wd = group["eps"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                v_hat = exp_avg_sq / (1 - beta2**step)
                rms = torch.sqrt(torch.mean(grad * grad / torch.clamp(v_hat, min=eps * eps)))
                # A tensor, not a Python float: no device sync per parameter on GPU.
                lr_t = lr / torch.clamp(rms, min=1.0)
                if wd != 0.0:
                    p.mul_(1.0 - (lr_t / group["peak_lr"]) * wd)
                update = (exp_avg / (1 - beta1**step)) / v_hat.sqrt_().add_(eps)
                p.sub_((lr_t * update).to(p.dtype))
        return loss


def adamw(
    params: Iterable, lr: float = 8e-4, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0
):
    """torch's AdamW with the same signature, for comparison runs (decay scaled by ``lr`` as usual)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


__all__ = ["StableAdamW", "adamw", "param_groups"]
