"""Two DDP processes (gloo, CPU) train exactly like one process with the same global batch.

The same four packed batches feed both set-ups: one process runs two micro-batches per step; two ranks take
one micro-batch each. Gradient averaging over ranks must equal weighting over micro-batches, the token count
must add up over ranks, and a non-finite loss on one rank must be handled the same on both.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TINY, FixedSteps, fit_on_cpu, free_port, sample_batches, survivors_of_sigkill

from mmbert.train import MLMModule


class _NaNOnRankOne(MLMModule):
    """A loss that is NaN on rank 1 only, once, at step 1."""

    poisoned = False

    def forward(self, **batch):
        out = super().forward(**batch)
        if self.global_rank == 1 and self.global_step == 1 and not self.poisoned:
            self.poisoned = True
            out.loss = out.loss * float("nan")
        return out


class _RecordSteps(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        record = {"steps": self.steps, "skipped": pl_module.skipped_batches}
        torch.save(record, self.path.with_name(f"{self.path.stem}-rank{trainer.global_rank}.pt"))


class _SaveWeights(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            torch.save({"state": pl_module.net.state_dict(), "tokens_seen": pl_module.tokens_seen}, self.path)


def _fit(
    batches: list[dict], devices: int, out: Path, module_cls=MLMModule, max_steps: int = 2, **kw
) -> dict:
    L.seed_everything(0)
    module = module_cls(model_config=TINY, optimizer=functools.partial(torch.optim.SGD, lr=0.5), **kw)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    callbacks = [_SaveWeights(out), _RecordSteps(out)]
    fit_on_cpu(module, FixedSteps(batches), max_steps, devices, strategy, callbacks)
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    batches = sample_batches(4)
    start = _fit(batches, devices=1, out=tmp_path / "one.pt")  # two optimizer steps either way
    two = _fit(batches, devices=2, out=tmp_path / "two.pt")
    assert two["tokens_seen"] == start["tokens_seen"] == sum(int(b["num_tokens"]) for b in batches)
    L.seed_everything(0)
    init = MLMModule(model_config=TINY, optimizer=None).net.state_dict()
    for name, tensor in start["state"].items():
        torch.testing.assert_close(two["state"][name], tensor, atol=2e-6, rtol=1e-5, msg=name)
    moved = [n for n, t in start["state"].items() if not torch.equal(t, init[n])]
    assert len(moved) > len(start["state"]) // 2, "the runs must actually train"


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_is_skipped_on_both(tmp_path):
    batches = sample_batches(6)
    _fit(batches, 2, tmp_path / "skip.pt", _NaNOnRankOne, max_steps=2, on_nonfinite="skip")  # no hang
    ranks = [torch.load(tmp_path / f"skip-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0] == ranks[1] == {"steps": [1, 1, 2], "skipped": 1}, "the same step skipped on both"


# Two ranks as the tests spawn them: rank 1 never reaches the barrier, so rank 0 waits in it for ever. The
# file argv[2] appears once both ranks are connected.
_WAITING_RANKS = """
import signal, sys
from pathlib import Path
import torch.distributed as dist
from helpers import spawn_ranks

def wait(rank: int, port: int, ready: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    if rank == 0:
        Path(ready).touch()
        dist.barrier()
    signal.pause()

if __name__ == "__main__":
    spawn_ranks(wait, int(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.slow  # each rank imports helpers (Lightning, the data package): 10-40 s
@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_spawned_ranks_die_with_a_killed_parent(tmp_path):
    script, ready = tmp_path / "waiting_ranks.py", tmp_path / "ready"
    script.write_text(_WAITING_RANKS)
    # Both ranks and multiprocessing's resource tracker (it ends once the parent and the ranks, which hold its
    # pipe, are gone).
    assert survivors_of_sigkill([sys.executable, str(script), str(free_port()), str(ready)], 3, ready) == {}
