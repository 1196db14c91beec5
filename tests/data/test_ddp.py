"""Two real processes (gloo): disjoint data per rank, and a gathered state that resumes every rank exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import free_port, leave_process_group, spawn_ranks

from mmbert.data import MLMDataModule, SampleMix


def make_dm() -> MLMDataModule:
    mix = SampleMix(subset="pretrain")
    return MLMDataModule(
        mix, seq_len=64, rows_per_device=2, tau=0.7, mask_ratio=0.3, seed=5, snapshot_every=4
    )


def unmasked(batch: dict) -> torch.Tensor:
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def run_rank(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dm = make_dm()
        dm.setup("fit")
        it = dm.train_batches()
        before = [unmasked(next(it)) for _ in range(6)]  # masking differs per rank; compare the text
        state = dm.state_dict()  # collective: every rank's state
        after = [unmasked(next(it)) for _ in range(6)]
        resumed = make_dm()
        resumed.setup("fit")
        resumed.load_state_dict(state)
        it2 = resumed.train_batches()
        again = [unmasked(next(it2)) for _ in range(6)]
        torch.save({"rank": dm.rank, "ranks_in_state": len(state["ranks"]), "before": before, "after": after,
                    "again": again}, Path(out) / f"rank{rank}.pt")  # fmt: skip
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()


@pytest.mark.slow
def test_two_ranks_get_different_data_and_resume_exactly(tmp_path: Path) -> None:
    port = free_port()
    spawn_ranks(run_rank, 2, port, str(tmp_path))
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    assert [x["rank"] for x in r] == [0, 1] and all(x["ranks_in_state"] == 2 for x in r)
    assert not any(torch.equal(a, b) for a, b in zip(r[0]["before"], r[1]["before"], strict=True))
    for x in r:
        assert all(torch.equal(a, b) for a, b in zip(x["after"], x["again"], strict=True))
