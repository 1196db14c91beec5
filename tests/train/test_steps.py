"""One Lightning batch is one optimizer step: its micro-batches, their weighting and the batch-size warmup."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from helpers import TINY, fit_on_cpu
from torch.utils.data import DataLoader

from mmbert.data import MLMDataModule, SampleMix
from mmbert.data.batch import StepBatch, assemble, split_rows
from mmbert.train import BatchSizeWarmup, MLMModule

SEQ = 64


def _rows(n: int) -> list:
    dm = MLMDataModule(SampleMix(subset="pretrain"), seq_len=SEQ, rows_per_device=n, tau=0.7, mask_ratio=0.3)
    dm.setup("fit")
    dm.train_dataloader()
    dm._open_rows()
    return dm._take_rows(n)


def _batch(rows: list) -> dict:
    """A packed batch masked by a rule of the rows themselves (every 5th token of a row), so any split of
    the rows into micro-batches masks exactly the same tokens."""
    batch = assemble(rows, SEQ, 0, 1)
    ids = batch["input_ids"]
    labels = torch.full_like(ids, -100)
    in_row = torch.cat([torch.arange(len(r.ids)) for r in rows])
    pick = torch.zeros_like(ids, dtype=torch.bool)
    pick[: len(in_row)] = in_row % 5 == 0
    pick &= ids > 4
    labels[pick] = ids[pick]
    batch["input_ids"] = torch.where(pick, torch.full_like(ids, 4), ids)
    batch["labels"] = labels
    return batch


class _Steps(L.LightningDataModule):
    def __init__(self, per_rank: list[list[StepBatch]]) -> None:
        super().__init__()
        self.per_rank = per_rank

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.per_rank[self.trainer.global_rank], batch_size=None, shuffle=False)


def _train(steps: list[StepBatch]) -> tuple[dict, MLMModule]:
    L.seed_everything(0)
    module = MLMModule(model_config=TINY, optimizer=functools.partial(torch.optim.SGD, lr=0.5))
    fit_on_cpu(module, _Steps([steps]), len(steps))
    return module.net.state_dict(), module


def test_a_step_means_the_same_however_its_rows_are_split():
    rows = _rows(7)
    whole, m1 = _train([StepBatch([_batch(rows)])])
    split, m2 = _train([StepBatch([_batch(rows[:3]), _batch(rows[3:6]), _batch(rows[6:])])])
    assert m1.tokens_seen == m2.tokens_seen == sum(len(r.ids) for r in rows)
    moved = 0
    L.seed_everything(0)
    init = MLMModule(model_config=TINY, optimizer=None).net.state_dict()
    for name, tensor in whole.items():
        torch.testing.assert_close(split[name], tensor, atol=2e-6, rtol=1e-5, msg=name)
        moved += not torch.equal(tensor, init[name])
    assert moved > len(whole) // 2, "the step must actually train"


def test_split_rows_fills_micro_batches_first():
    assert split_rows(8, 8) == [8]
    assert split_rows(8, 3) == [3, 3, 2]
    assert split_rows(48, 32) == [32, 16]
    assert split_rows(576, 32) == [32] * 18
    assert split_rows(1, 32) == [1]
    with pytest.raises(ValueError, match="rows"):
        split_rows(0, 4)


BASE_STAGES_1 = [48, 618, 1188, 1758, 2328, 2898, 3468, 4038, 4608]
# 8 devices: every stage rounded down to a multiple of 8 (48, 2328 and 4608 already are).
BASE_STAGES_8 = [48, 616, 1184, 1752, 2328, 2896, 3464, 4032, 4608]


@pytest.mark.parametrize(
    "size, warmup_tokens", [("base", 60_000_000_000), ("small", 100_000_000_000)], ids=["base", "small"]
)
@pytest.mark.parametrize("devices, expected", [(1, BASE_STAGES_1), (8, BASE_STAGES_8)], ids=["1dev", "8dev"])
def test_batch_warmup_rows_as_trained(size, warmup_tokens, devices, expected):
    from helpers import compose_train
    from hydra.utils import instantiate

    cfg = compose_train([f"model={size}", "phase=pretrain"])
    schedule: BatchSizeWarmup = instantiate(cfg.batch_warmup)
    assert (schedule.min_rows, schedule.max_rows, schedule.warmup_tokens) == (48, 4608, warmup_tokens)
    at = [warmup_tokens * s // 8 for s in range(8)] + [warmup_tokens]
    assert [schedule(t, devices) for t in at] == expected
    assert [schedule(t - 1, devices) for t in at[1:]] == expected[:-1], "a stage starts at its threshold"
    # What each device trains, in micro-batches of the recipe's pre-training rows per device.
    micro = cfg.data.rows_per_device
    per_device = [split_rows(rows // devices, micro) for rows in expected]
    assert all(sum(mb) * devices == rows for mb, rows in zip(per_device, expected, strict=True))


def test_the_datamodule_trains_exactly_the_scheduled_rows():
    dm = MLMDataModule(
        SampleMix(subset="pretrain"), seq_len=SEQ, rows_per_device=4, tau=0.7, mask_ratio=0.3,
        global_batch_rows=10,
    )  # fmt: skip
    steps = dm.train_steps()
    step = next(steps)
    assert [mb["num_rows"] for mb in step.micro_batches] == [4, 4, 2]
    dm.set_step_rows(3)
    assert [mb["num_rows"] for mb in next(steps).micro_batches] == [3]
    dm.world_size = 2  # as on rank 0 of two devices
    with pytest.raises(Exception, match=r"multiple of the devices \(2\)"):
        next(steps)
