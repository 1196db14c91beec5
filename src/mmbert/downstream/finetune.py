"""The fine-tuning loop shared by the task types: AdamW, linear warmup and decay, packed batches of at most
``batch_tokens`` tokens, a dev evaluation after each epoch with early stopping, the best weights kept."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmbert.downstream.packing import batches_by_tokens
from mmbert.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    epochs: int = 3
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_tokens: int = 4096  # packed tokens per optimizer step
    batch_size: int = 32  # most examples per step
    patience: int = 2  # epochs without a better dev score before stopping
    grad_clip: float = 1.0
    dropout: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 (autocast)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_tokens", "batch_size", "patience"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"task.finetune.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"task.finetune.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"task.finetune.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"task.finetune.precision must be fp32 or bf16, got {self.precision!r}")


@dataclass
class History:
    steps: int
    epochs_run: int
    best_epoch: int | None  # None without a dev split
    dev_scores: list[float]
    train_loss: list[float]  # mean per epoch


def finetune(
    model: nn.Module,
    lengths: Sequence[int],
    loss_of: Callable[[list[int]], Tensor],
    cfg: FinetuneConfig,
    *,
    dev_score: Callable[[], float] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> History:
    """Train ``model`` in place on the examples ``0..len(lengths)-1``: ``loss_of(indices)`` is the mean loss
    of a batch of them. With ``dev_score`` (higher is better) the weights of the best epoch are restored."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith("bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    steps_per_epoch = len(batches_by_tokens(lengths, cfg.batch_tokens, cfg.batch_size, range(len(lengths))))
    total = steps_per_epoch * cfg.epochs
    warmup = int(total * cfg.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, warmup, total))
    best: tuple[float, int, dict[str, Any]] | None = None
    history = History(0, 0, None, [], [])
    bar = tqdm(total=total, desc="fine-tune", unit="step", leave=False, disable=None)  # off without a tty
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(lengths), generator=gen).tolist()
        losses = []
        for idx in batches_by_tokens(lengths, cfg.batch_tokens, cfg.batch_size, order):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = loss_of(idx)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            history.steps += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
        history.epochs_run += 1
        history.train_loss.append(sum(losses) / len(losses))
        if dev_score is None:
            continue
        model.eval()
        score = dev_score()
        history.dev_scores.append(score)
        log.info("epoch %d: train loss %.4f, dev score %.4f", epoch, history.train_loss[-1], score)
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            log.info("early stop after epoch %d (best %d)", epoch, best[1])
            break
    bar.close()
    if best is not None:
        model.load_state_dict(best[2])
        history.best_epoch = best[1]
    model.eval()
    return history


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
