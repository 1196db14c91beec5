"""Graceful stops: a signal finishes the optimizer step, writes last.ckpt and exits non-zero; resuming from
it equals the uninterrupted run; SLURM's requeue signal requeues the job, which resumes by itself; token
checkpoints and the token budget act only at optimizer-step boundaries (several micro-batches a step)."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import FAST, compose_train, logged

from mmbert.train.resume import Preempted
from mmbert.train.run import build, run

# Checkpoints every 1000 steps, as in the report: nothing but the stop itself writes last.ckpt here.
COMMON = (
    "trainer.max_steps=6",
    "callbacks.model_checkpoint.every_n_train_steps=1000",
    "trainer.val_check_interval=3",
)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[int, float]:
    """Losses of the uninterrupted run."""
    out = tmp_path_factory.mktemp("straight")
    run(compose_train([*FAST, *COMMON], output_dir=out))
    return _losses(out)


class SignalAt(L.Callback):
    """Sends this process a signal when an optimizer step ends (a scheduler's SIGTERM, a Ctrl-C)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _fit_with_signal(cfg, step: int, signum: int) -> Preempted:
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.insert(0, SignalAt(step, signum))  # checkpoint callbacks stay last
    with pytest.raises(Preempted) as stopped:
        trainer.fit(module, datamodule=datamodule)
    return stopped.value


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _losses(run_dir: Path) -> dict[int, float]:
    return dict(logged(run_dir, "train/loss"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_last_ckpt_exits_nonzero_and_resumes_to_the_same_losses(
    compose_fast, tmp_path, straight, signum
):
    stopped_dir = tmp_path / "stopped"
    stopped = _fit_with_signal(compose_fast(*COMMON, output_dir=stopped_dir), step=3, signum=signum)
    assert stopped.code == 128 + signum  # a scheduler sees a failure, not success
    last = stopped_dir / "checkpoints" / "last.ckpt"
    assert stopped.checkpoint == str(last)
    assert _ckpt(last)["global_step"] == 3  # the step that was running finished, nothing after it
    assert not (stopped_dir / "hf").exists(), "an interrupted run does not export final weights"
    assert sorted(_losses(stopped_dir)) == [0, 1, 2]  # the last step's metrics reached the logger
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored (pytest's own still work)

    resumed = tmp_path / "resumed"
    run(compose_fast(*COMMON, f"ckpt_path={last}", output_dir=resumed))
    b = _losses(resumed)
    assert sorted(b) == [3, 4, 5]
    assert all(straight[s] == b[s] for s in b), [(s, straight[s], b[s]) for s in b]


def test_slurm_requeue_signal_requeues_and_the_requeued_job_resumes_by_itself(
    compose_fast, tmp_path, straight, monkeypatch
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "mmbert", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}  # fmt: skip
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)

    out = tmp_path / "job"
    stopped = _fit_with_signal(compose_fast(*COMMON, output_dir=out), step=4, signum=signal.SIGUSR2)
    assert stopped.code == 128 + signal.SIGUSR2
    assert calls.read_text().split() == ["requeue", "4242"]
    assert _ckpt(out / "checkpoints" / "last.ckpt")["global_step"] == 4

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets in the requeued job
    trainer = run(compose_fast(*COMMON, output_dir=out))  # the same command, no ckpt_path
    assert trainer.global_step == 6
    assert [s for s, _ in logged(out, "train/loss")] == list(range(6))  # no step lost or repeated
    assert _losses(out) == straight


def test_token_checkpoints_and_the_token_budget_act_at_optimizer_step_boundaries(compose_fast, tmp_path):
    out = tmp_path / "run"
    # 8 rows a step in micro-batches of 3, 3 and 2: one optimizer step accumulates three micro-batches.
    overrides = ("data.rows_per_device=3", "trainer.max_steps=-1", "callbacks.model_checkpoint.every_n_train_steps=1000",
                 "trainer.val_check_interval=1000", "callbacks.token_checkpoint.every_n_tokens=1500",
                 "callbacks.token_budget.max_tokens=5000")  # fmt: skip
    trainer = run(compose_fast(*overrides, output_dir=out))
    step_tokens = [int(v) for _, v in logged(out, "train/tokens")]  # tokens seen at the end of each step
    rows = {v for _, v in logged(out, "train/batch_rows")}
    assert rows == {8.0}
    # The budget stops at the first step boundary at or past it, never inside a step.
    assert step_tokens[-1] >= 5000 > step_tokens[-2]
    assert trainer.lightning_module.tokens_seen == step_tokens[-1]
    saved = sorted((out / "checkpoints").glob("tokens-*.ckpt"), key=lambda p: int(p.stem.split("-")[1]))
    assert [p.name for p in saved] == ["tokens-1500.ckpt", "tokens-3000.ckpt", "tokens-4500.ckpt"]
    for path in saved:
        ckpt = _ckpt(path)
        step = ckpt["global_step"]
        # The checkpoint holds the state after `step` whole optimizer steps: tokens at that boundary, and the
        # optimizer's own step count agrees (no micro-batch of the next step is in it).
        assert ckpt["tokens_seen"] == step_tokens[step - 1]
        assert step_tokens[step - 2] < int(path.stem.split("-")[1]) <= step_tokens[step - 1]
        moments = ckpt["optimizer_states"][0]["state"]
        assert {int(s["step"]) for s in moments.values()} == {step}


def test_a_signal_on_the_last_step_lets_the_run_finish(compose_fast, tmp_path):
    out = tmp_path / "run"
    datamodule, module, trainer = build(compose_fast(*COMMON, output_dir=out))
    trainer.callbacks.insert(0, SignalAt(6, signal.SIGTERM))  # max_steps=6: the work is done anyway
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 6 and (out / "hf" / "model.safetensors").is_file()
    assert _ckpt(out / "checkpoints" / "last.ckpt")["global_step"] == 6
