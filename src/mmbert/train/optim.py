"""StableAdamW (ModernBERT's optimizer) and parameter grouping.

StableAdamW is AdamW with two changes: each tensor's step size is scaled down when its gradient is large
relative to the second-moment estimate (update clipping, which is why the recipe needs no gradient
clipping), and weight decay is fully decoupled from the learning rate: it is scaled by ``lr_t / peak_lr``
rather than by ``lr_t`` itself, so changing the peak LR does not change the effective decay.

Under FSDP2 (``fully_shard``) each parameter is a DTensor of which a rank holds a shard. The moments and
the decay are elementwise and run on the local shard; the clipping statistic is a mean over the whole
tensor, so each rank sums its shard's part, the sums of all sharded tensors go in one stacked all-reduce
per step (per sharding process group), and the mean divides by the whole tensor's size. Every rank must
hold gradients for the same sharded parameters, as FSDP2 guarantees. Plain tensors take the unsharded path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor


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
        sharded: list[_Sharded] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                groups = _shard_groups(p)
                if groups:
                    sharded.append(self._sharded_moments(p, group, groups))
                    continue
                # A plain tensor (or a DTensor replicated everywhere): the whole tensor is here.
                param, grad, eps = _local(p), _local_grad(p), group["eps"]
                exp_avg, _, step, v_hat = self._moments(p, grad, group)
                rms = torch.sqrt(torch.mean(grad * grad / torch.clamp(v_hat, min=eps * eps)))
                # A tensor, not a Python float: no device sync per parameter on GPU.
                self._apply(param, exp_avg, v_hat, step, group, group["lr"] / torch.clamp(rms, min=1.0))
        if sharded:
            self._finish_sharded(sharded)
        return loss

    def _moments(self, p: torch.Tensor, grad: torch.Tensor, group: dict):
        """Updates the elementwise moments (on the local shard) and returns them with ``v_hat``."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            # zeros_like keeps a DTensor's sharding, so sharded checkpoints see sharded state.
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        state["step"] += 1
        step = state["step"]
        exp_avg, exp_avg_sq = _local(state["exp_avg"]), _local(state["exp_avg_sq"])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v_hat = exp_avg_sq / (1 - beta2**step)
        return exp_avg, exp_avg_sq, step, v_hat

    @staticmethod
    def _apply(param, exp_avg, v_hat, step: int, group: dict, lr_t) -> None:
        """Decoupled weight decay, then the bias-corrected Adam update scaled by the clipped ``lr_t``."""
        beta1 = group["betas"][0]
        if group["weight_decay"] != 0.0:
            param.mul_(1.0 - (lr_t / group["peak_lr"]) * group["weight_decay"])
        update = (exp_avg / (1 - beta1**step)) / v_hat.sqrt_().add_(group["eps"])
        param.sub_((lr_t * update).to(param.dtype))

    def _sharded_moments(self, p, group: dict, groups: tuple) -> _Sharded:
        grad, eps = _local_grad(p), group["eps"]
        _, _, _, v_hat = self._moments(p, grad, group)
        # This shard's part of the whole tensor's sum; v_hat is recomputed for the update (cheaper in
        # memory than keeping a copy of every shard's v_hat until the reduction).
        local_sum = torch.sum(grad * grad / torch.clamp(v_hat, min=eps * eps))
        return _Sharded(p, group, groups, local_sum, p.numel())

    def _finish_sharded(self, sharded: list[_Sharded]) -> None:
        """Sums the shards' statistics (one all-reduce per process group), then updates every shard."""
        buckets: dict[tuple, list[_Sharded]] = {}
        for item in sharded:
            buckets.setdefault(item.groups, []).append(item)
        for groups, items in buckets.items():
            sums = torch.stack([item.local_sum for item in items])
            for process_group in groups:
                dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=process_group)
            counts = torch.tensor([float(item.numel) for item in items], device=sums.device)
            scale = torch.clamp(torch.sqrt(sums / counts), min=1.0)
            for item, s in zip(items, scale.unbind(), strict=True):
                p, group = item.param, item.group
                state = self.state[p]
                step = state["step"]
                beta2 = group["betas"][1]
                v_hat = _local(state["exp_avg_sq"]) / (1 - beta2**step)
                self._apply(_local(p), _local(state["exp_avg"]), v_hat, step, group, group["lr"] / s)


class _Sharded(NamedTuple):
    """A sharded parameter waiting for its whole-tensor statistic."""

    param: torch.Tensor
    group: dict
    groups: tuple  # the process groups of the mesh dimensions the tensor is sharded over
    local_sum: torch.Tensor  # this shard's sum of g^2 / max(v_hat, eps^2)
    numel: int  # elements in the whole tensor


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (a view: in-place changes reach the DTensor), or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def _local_grad(p: torch.Tensor) -> torch.Tensor:
    """The gradient as float32, laid out like the parameter (for a DTensor: its local shard)."""
    grad = p.grad
    if isinstance(grad, DTensor):
        if grad.placements != p.placements:
            grad = grad.redistribute(p.device_mesh, p.placements)
        grad = grad.to_local()
    return grad.float()


def _shard_groups(p: torch.Tensor) -> tuple:
    """The process groups over which a DTensor is sharded (``()`` for plain or fully replicated tensors)."""
    if not isinstance(p, DTensor):
        return ()
    mesh = p.device_mesh
    # Not ``is_shard()``: that is False for _StridedShard (FSDP2 over a tensor-parallel dimension).
    sharded = [dim for dim, pl in enumerate(p.placements) if not (pl.is_replicate() or pl.is_partial())]
    return tuple(mesh.get_group(dim) for dim in sharded)


def adamw(
    params: Iterable, lr: float = 8e-4, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0
):
    """torch's AdamW with the same signature, for comparison runs (decay scaled by ``lr`` as usual)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


__all__ = ["StableAdamW", "adamw", "param_groups"]
