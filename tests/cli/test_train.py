"""train.py as users run it, in subprocesses: multirun sweeps, two DDP processes, a run killed with SIGKILL
mid-training and one stopped with SIGTERM, each resuming to the same losses as an uninterrupted one; a
run's output holds no advertising tips."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FAST, REPO, logged

TRAIN = [sys.executable, str(REPO / "train.py")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train(
    cwd: Path, *overrides: str, multirun: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Runs train.py from `cwd`, outside the repository, as a user would from their own folder."""
    flags = ["-m"] if multirun else []  # Hydra's flags go before the overrides
    proc = subprocess.run(
        [*TRAIN, *flags, *FAST, *overrides],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _losses(run_dir: Path) -> dict[int, float]:
    return dict(logged(run_dir, "train/loss"))


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_multirun_sweeps_phases_into_one_folder_each(tmp_path):
    sweep = tmp_path / "sweep"
    _train(
        tmp_path,
        "phase=pretrain,decay",
        "trainer.max_steps=2",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${phase.name}",
        multirun=True,
    )
    for phase, theta in (("pretrain", 10_000.0), ("decay", 160_000.0)):
        hf_config = json.loads((sweep / phase / "hf" / "config.json").read_text())
        assert hf_config["global_rope_theta"] == theta
        assert (sweep / phase / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / phase / "hf" / "tokenizer.json").is_file()  # found from outside the repository
        assert len(_losses(sweep / phase)) == 2


@pytest.mark.slow
def test_two_ddp_processes_count_every_rank_and_resume(tmp_path):
    first = tmp_path / "first"
    common = ("trainer=ddp_cpu", "data.rows_per_device=4", "logger=csv")
    _train(tmp_path, *common, "trainer.max_steps=4", f"hydra.run.dir={first}")
    ckpt = _ckpt(first / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    mixture = json.loads((first / "mixture.json").read_text())
    realised = sum(e["realised_tokens"] for e in mixture["languages"].values())
    # Both ranks' tokens: 4 steps x 2 ranks x 4 rows of 128 tokens, less the padding of partly filled rows.
    assert ckpt["tokens_seen"] == realised
    assert 0.9 * 4 * 2 * 4 * 128 <= realised <= 4 * 2 * 4 * 128
    assert len(ckpt["MLMDataModule"]["ranks"]) == 2, (
        "the data position of each rank travels in the checkpoint"
    )
    resumed = tmp_path / "resumed"
    _train(tmp_path, *common, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}")
    end = _ckpt(resumed / "checkpoints" / "last.ckpt")
    assert end["global_step"] == 6
    assert end["tokens_seen"] > ckpt["tokens_seen"]
    assert sorted(_losses(resumed)) == [4, 5]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_run(tmp_path):
    common = (
        "trainer.max_steps=24",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "trainer.val_check_interval=8",
    )
    straight = tmp_path / "straight"
    _train(tmp_path, *common, f"hydra.run.dir={straight}")

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*TRAIN, *FAST, *common, f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = killed / "checkpoints" / "step-0000012.ckpt"
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run ended or stalled before its step-12 checkpoint"
    last = killed / "checkpoints" / "last.ckpt"
    step = _ckpt(last)["global_step"]
    # last.ckpt is refreshed right after each step checkpoint: the kill may land in between.
    assert 8 <= step < 24, step

    resumed = tmp_path / "resumed"
    _train(tmp_path, *common, f"ckpt_path={last}", f"hydra.run.dir={resumed}")
    a, b = _losses(straight), _losses(resumed)
    assert sorted(b) == list(range(step, 24))
    for s in b:
        assert math.isclose(a[s], b[s], abs_tol=1e-4), (s, a[s], b[s])


@pytest.mark.slow
def test_sigterm_to_train_py_writes_last_ckpt_exits_nonzero_and_resumes_exactly(tmp_path):
    # Step checkpoints every 1000 steps, as in the report: only the stop itself can write last.ckpt.
    common = ("trainer.max_steps=16", "callbacks.model_checkpoint.every_n_train_steps=1000")
    straight = tmp_path / "straight"
    _train(tmp_path, *common, f"hydra.run.dir={straight}")

    stopped = tmp_path / "stopped"
    # Token checkpoints show progress without touching last.ckpt.
    proc = subprocess.Popen(
        [
            *TRAIN,
            *FAST,
            *common,
            "callbacks.token_checkpoint.every_n_tokens=3000",
            f"hydra.run.dir={stopped}",
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list((stopped / "checkpoints").glob("tokens-*.ckpt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = _ckpt(stopped / "checkpoints" / "last.ckpt")["global_step"]
    assert 1 <= step < 16

    resumed = tmp_path / "resumed"
    _train(
        tmp_path, *common, f"ckpt_path={stopped / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}"
    )
    a, b = _losses(straight), _losses(resumed)
    assert sorted(b) == list(range(step, 16))
    assert all(a[s] == b[s] for s in b), [(s, a[s], b[s]) for s in b]


def test_a_run_logs_no_lightning_tips(tmp_path):
    # Lightning advertises its cloud services ("💡 Tip: ... try installing litlogger") once per trainer.
    proc = _train(tmp_path, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}")
    for text in (proc.stdout, proc.stderr, (tmp_path / "run" / "train.log").read_text()):
        assert "Tip:" not in text and "litlogger" not in text and "litmodels" not in text
    assert "Trainer.fit" in proc.stderr + proc.stdout, "the output checked is Lightning's"
