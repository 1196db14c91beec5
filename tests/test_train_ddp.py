"""Two DDP processes (gloo, CPU) train exactly like one process with the same global batch.

The same four packed batches feed both set-ups: one process accumulates two micro-batches per step; two
ranks take one micro-batch each. Gradient averaging over ranks must equal averaging over micro-batches,
and the token count must add up over ranks.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mmbert.data import MLMDataModule, SampleMix
from mmbert.train import MLMModule

TINY = dict(
    vocab_size=8192,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=2,
)


class _FixedBatches(L.LightningDataModule):
    """Rank r of w gets batches r, r + w, r + 2w, ...: what each rank would draw from its own shard."""

    def __init__(self, batches: list[dict]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(self.batches[rank::world], batch_size=None, shuffle=False)


class _SaveWeights(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            torch.save({"state": pl_module.net.state_dict(), "tokens_seen": pl_module.tokens_seen}, self.path)


def _batches(n: int) -> list[dict]:
    dm = MLMDataModule(SampleMix(subset="pretrain"), seq_len=64, rows_per_step=2, tau=0.7, mask_ratio=0.3)
    dm.setup("fit")
    it = dm.train_batches()
    return [next(it) for _ in range(n)]


def _fit(batches: list[dict], devices: int, out: Path) -> dict:
    L.seed_everything(0)
    module = MLMModule(model_config=TINY, optimizer=functools.partial(torch.optim.SGD, lr=0.5))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=2,
        accumulate_grad_batches=2 // devices,
        use_distributed_sampler=False,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_SaveWeights(out)],
    )
    trainer.fit(module, datamodule=_FixedBatches(batches))
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    batches = _batches(4)
    start = _fit(batches, devices=1, out=tmp_path / "one.pt")  # two optimizer steps either way
    two = _fit(batches, devices=2, out=tmp_path / "two.pt")
    assert two["tokens_seen"] == start["tokens_seen"] == sum(int(b["num_tokens"]) for b in batches)
    L.seed_everything(0)
    init = MLMModule(model_config=TINY, optimizer=None).net.state_dict()
    for name, tensor in start["state"].items():
        torch.testing.assert_close(two["state"][name], tensor, atol=2e-6, rtol=1e-5, msg=name)
    moved = [n for n, t in start["state"].items() if not torch.equal(t, init[n])]
    assert len(moved) > len(start["state"]) // 2, "the runs must actually train"
