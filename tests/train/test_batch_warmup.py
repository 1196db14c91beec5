"""A training run with the batch-size warmup on trains, at every step, the rows the schedule gives for the
tokens seen before that step: on one process, and summed over the ranks of two gloo processes.

``train/batch_rows`` is what the module counted in the step's micro-batches (reduced over ranks), not the
schedule's value logged back; the expectation is the schedule function applied to the run's own
``train/tokens`` of the step before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FAST, compose_train, free_port, logged, spawn_ranks, torchrun_env
from omegaconf import DictConfig

from mmbert.train import BatchSizeWarmup
from mmbert.train.run import run

MIN_ROWS, MAX_ROWS = 2, 12
# Eight stages of 1500 tokens: more than a step of the largest warmup stage (10 rows of up to 128 tokens),
# so no stage is skipped; then the full batch.
WARMUP_TOKENS = 12000
STEPS = 28  # two processes reach the full batch at step 26
WARMUP = [
    *(o for o in FAST if not o.startswith("callbacks.batch_warmup")),
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=1000",
    "callbacks.model_checkpoint.every_n_train_steps=1000",
    f"global_batch_rows={MAX_ROWS}",
    f"recipe.batch_warmup_min_rows={MIN_ROWS}",
    f"recipe.batch_warmup_tokens={WARMUP_TOKENS}",
    "data.rows_per_device=3",  # a stage of 5 rows on one device is micro-batches of 3 and 2 rows
]


def _config(out: Path, *overrides: str) -> DictConfig:
    return compose_train([*WARMUP, *overrides], output_dir=out)


def _expected_rows(out: Path, devices: int) -> list[tuple[int, float]]:
    """The schedule's rows of each logged step, from the tokens seen before it (the previous step's total)."""
    schedule = BatchSizeWarmup(MIN_ROWS, MAX_ROWS, WARMUP_TOKENS)
    tokens = logged(out, "train/tokens")
    before = [0, *(int(t) for _, t in tokens[:-1])]
    return [(step, float(schedule(t, devices))) for (step, _), t in zip(tokens, before, strict=True)]


def _stages(rows: list[tuple[int, float]]) -> list[tuple[int, int]]:
    """(rows, steps) of each run of equal batch sizes, in order."""
    runs: list[tuple[int, int]] = []
    for _, r in rows:
        if runs and runs[-1][0] == int(r):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((int(r), 1))
    return runs


def _check(out: Path, devices: int, stages: list[int]) -> None:
    rows = logged(out, "train/batch_rows")
    assert [step for step, _ in rows] == list(range(STEPS)), "one value per step"
    assert rows == _expected_rows(out, devices)
    assert [r for r, _ in _stages(rows)] == stages, _stages(rows)


def test_one_process_trains_the_rows_of_each_warmup_stage(tmp_path):
    out = tmp_path / "run"
    run(_config(out))
    # Every stage of 2 + 10 * s // 8 rows (s = 0..7), then the full batch.
    _check(out, 1, [2, 3, 4, 5, 7, 8, 9, 10, 12])


def _warmup_rank(rank: int, port: int, out: str) -> None:
    torchrun_env(rank, 2, port, "test_batch_warmup")
    run(_config(Path(out), "trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp"))


@pytest.mark.slow
def test_two_processes_train_the_rows_of_each_warmup_stage_over_both(tmp_path):
    out = tmp_path / "run"
    spawn_ranks(_warmup_rank, free_port(), str(out))
    # Each stage rounded down to a multiple of the two devices: a rank trains half of every step.
    _check(out, 2, [2, 4, 6, 8, 10, 12])
