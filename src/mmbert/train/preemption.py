"""Graceful stops: a signal asks the run to stop, and it stops at the next optimizer-step boundary.

SIGTERM and SIGINT (and, under SLURM, its requeue signal) only record the request; the checkpoint callback
(:class:`mmbert.train.StepCheckpoint`) checks it once per optimizer step, after every other callback has
updated its state, writes ``last.ckpt`` (atomically) and ends the run with :class:`Preempted`, a non-zero
exit status. Under SLURM the requeue signal also requeues the job (``scontrol requeue``, as Lightning's SLURM
environment does), and the requeued job resumes from that ``last.ckpt`` by itself (:func:`requeued_resume_path`).
Saving inside the signal handler instead (Lightning's own SLURM handler) would write a step half done.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """The run stopped on a signal after writing last.ckpt; the exit status is 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: str | None) -> None:
        super().__init__(128 + signum)
        self.signum, self.checkpoint = signum, checkpoint


def signal_number(name: str | int) -> int:
    if isinstance(name, int):
        return name
    try:
        return int(getattr(signal.Signals, name if name.startswith("SIG") else f"SIG{name}"))
    except AttributeError:
        raise ValueError(f"unknown signal {name!r} (e.g. SIGUSR1, SIGUSR2)") from None


def under_slurm() -> bool:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def slurm_job_id() -> str | None:
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{array_task}" if array_job and array_task else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


class StopRequest:
    """Signal handlers that record a stop request instead of interrupting a step."""

    def __init__(self, requeue_signal: str | int | None = "SIGUSR2") -> None:
        self.requeue_signal = None if requeue_signal is None else signal_number(requeue_signal)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def signals(self) -> list[int]:
        sigs = [int(signal.SIGTERM), int(signal.SIGINT)]
        if self.requeue_signal is not None and under_slurm():
            sigs.append(self.requeue_signal)
        return sigs

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self.signum = None
        for sig in self.signals():
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        if self.signum is None:
            log.warning(
                "received %s: stopping after the current optimizer step (last.ckpt is written first)",
                signal.Signals(signum).name,
            )
            self.signum = signum

    @property
    def requeue(self) -> bool:
        return self.signum is not None and self.signum == self.requeue_signal


def requeue_job() -> None:
    """``scontrol requeue`` this SLURM job (the requeued job resumes from last.ckpt, see run.py)."""
    job = slurm_job_id()
    if job is None:
        log.warning("requeue signal received but no SLURM job id in the environment: not requeued")
        return
    result = subprocess.run(["scontrol", "requeue", job], check=False)
    if result.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed with status %d", job, result.returncode)


def requeued_resume_path(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint a requeued SLURM job resumes from: its last.ckpt, when SLURM restarted the job
    (``SLURM_RESTART_COUNT`` > 0) and one exists."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1 or not under_slurm():
        return None
    last = Path(checkpoint_dir) / "last.ckpt"
    return last if last.is_file() else None
