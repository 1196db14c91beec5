"""Everything a resumed run depends on: which checkpoint it resumes from, how checkpoints are written, and
how a run stops so that resuming from its last checkpoint equals the run never stopped.

Where the state of a run lives, and so what a checkpoint (``ckpt_path=``) restores:

- weights, optimizer moments, ``global_step``: Lightning's own checkpoint, written atomically
  (:class:`AtomicCheckpointIO`) and read back without running pickled code;
- ``tokens_seen`` (which every schedule is a function of) and ``skipped_batches``:
  :meth:`mmbert.train.MLMModule.on_save_checkpoint`; dropout is reseeded from (seed, step, rank) each step,
  so torch's RNG needs no saving;
- what each schedule callback applied last, the token-checkpoint bucket, the realised mixture: each
  callback's ``state_dict`` (:mod:`mmbert.train.callbacks`);
- the data position (stream and worker snapshots, masking RNG, mask ratio, rows per step): the
  datamodule's ``state_dict`` (:mod:`mmbert.data.resume`).

Checkpoints are written every N steps and at the end of the phase (:class:`StepCheckpoint`, ``last.ckpt``)
and each time tokens seen cross a multiple (:class:`TokenCheckpoint`), always at optimizer-step boundaries.

Graceful stops: SIGTERM and SIGINT (and, under SLURM, its requeue signal) only record the request
(:class:`StopRequest`); :class:`StepCheckpoint` checks it once per optimizer step, after every other callback
has updated its state, writes ``last.ckpt`` and ends the run with :class:`Preempted`, a non-zero exit status.
Under SLURM the requeue signal also requeues the job (``scontrol requeue``, as Lightning's SLURM environment
does), and the requeued job resumes from that ``last.ckpt`` by itself (:func:`resume_path`). Saving inside
the signal handler instead (Lightning's own SLURM handler) would write a step half done.
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

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from mmbert.checkpoint import Format, check_shapes, open_reader, safe_torch_load
from mmbert.errors import CheckpointNotFoundError
from mmbert.model import MmBertConfig, MmBertForMaskedLM

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- which checkpoint a run resumes from
def resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``, or, in a SLURM job that was requeued, the last.ckpt its earlier run left."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
    found = requeued_resume_path(checkpoint.dirpath) if checkpoint else None
    if found is not None:
        log.info("requeued SLURM job: resuming from %s", found)
        return str(found)
    return None


def check_resume_fits(ckpt_path: str | None, model_config: MmBertConfig) -> None:
    """CheckpointError naming the first tensor of ``ckpt_path`` whose shape is not the configured model's
    (a checkpoint of another model size), read lazily: the file's tensor shapes, the model's on meta.
    A folder (FSDP's sharded checkpoint) is left to Lightning."""
    if ckpt_path is None or Path(ckpt_path).is_dir():
        return
    if not Path(ckpt_path).is_file():
        raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint")
    reader = open_reader(Path(ckpt_path))
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in MmBertForMaskedLM(model_config).state_dict().items()}
        check_shapes(expected, {k: t.shape for k, t in reader.tensors.items()}, f"ckpt_path={ckpt_path}")
    finally:
        reader.close()


def requeued_resume_path(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint a requeued SLURM job resumes from: its last.ckpt, when SLURM restarted the job
    (``SLURM_RESTART_COUNT`` > 0) and one exists."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1 or not under_slurm():
        return None
    last = Path(checkpoint_dir) / "last.ckpt"
    return last if last.is_file() else None


# ---------------------------------------------------------------- writing and reading checkpoints
class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file and renames it, so a kill mid-write never corrupts it."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        fs = get_filesystem(path)
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        fs.mv(tmp, str(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Resuming reads the checkpoint like every other load here: without running pickled code."""
        checkpoint, _ = safe_torch_load(path, [Format.LIGHTNING], mmap=False)
        return checkpoint


class TokenCheckpoint(L.Callback):
    """Saves ``tokens-<N>.ckpt`` each time tokens seen cross a multiple of ``every_n_tokens`` (None: off)."""

    def __init__(self, dirpath: str, every_n_tokens: int | None) -> None:
        if every_n_tokens is not None and every_n_tokens <= 0:
            raise ValueError(f"callbacks.token_checkpoint.every_n_tokens must be > 0, got {every_n_tokens}")
        self.dirpath = Path(dirpath)
        self.every_n_tokens = every_n_tokens
        self.last_bucket = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_tokens is None:
            return
        bucket = pl_module.tokens_seen // self.every_n_tokens
        if bucket > self.last_bucket:
            self.last_bucket = bucket
            trainer.save_checkpoint(self.dirpath / f"tokens-{bucket * self.every_n_tokens}.ckpt")

    def state_dict(self) -> dict:
        return {"last_bucket": self.last_bucket}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_bucket = int(state_dict["last_bucket"])


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every N steps that also saves the final step, saves after a validation due on the
    same step, and stops gracefully on a signal.

    A phase ends when its token budget is spent, rarely on a multiple of ``every_n_train_steps``; without
    the final save the next phase (``model.init_from=.../last.ckpt``) would start from weights up to N steps
    old. Saving after the validation of that step means a run killed during it repeats it on resume.

    SIGTERM, SIGINT and (under SLURM) ``requeue_signal`` finish the current optimizer step, write
    ``last.ckpt`` and exit with status 128 + signal (:class:`Preempted`); the requeue signal also requeues
    the SLURM job. Lightning runs checkpoint callbacks after all others, so the saved state is the one a step
    checkpoint of the same step would hold, and resuming from it equals the uninterrupted run.
    """

    def __init__(self, *args, requeue_signal: str | None = "SIGUSR2", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_request = StopRequest(requeue_signal)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.stop_request.install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._is_save_step(trainer) and _validation_follows(trainer):
            self._defer_save_until_validation = True  # ModelCheckpoint.on_validation_end saves then
        else:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # Every rank stops at the same step, whichever received the signal. A run that ends with this very
        # step (token budget, max_steps) just finishes: final checkpoint and export, status 0.
        stop = trainer.strategy.reduce_boolean_decision(self.stop_request.signum is not None, all=False)
        if stop and not (trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step):
            self._stop(trainer)

    def _stop(self, trainer) -> None:
        signum = self.stop_request.signum or signal.SIGTERM
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        log.warning("stopped at step %d on %s; resume with ckpt_path=%s", trainer.global_step,
                    signal.Signals(signum).name, self.last_model_path)  # fmt: skip
        if self.stop_request.requeue and trainer.is_global_zero:
            requeue_job()
        # The loop would hand this step's metrics to the loggers right after this hook; do it now so the
        # metrics of a resumed run have no gap (the loggers are finalised on the way out).
        trainer._logger_connector.on_batch_end()
        trainer._logger_connector.update_train_step_metrics()
        raise Preempted(signum, self.last_model_path)

    def _is_save_step(self, trainer) -> bool:
        n = self._every_n_train_steps
        return n >= 1 and trainer.global_step % n == 0 and not self._should_skip_saving_checkpoint(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.stop_request.uninstall()
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.stop_request.uninstall()


def _validation_follows(trainer) -> bool:
    """Whether Lightning runs validation right after the current training batch (batch-count intervals)."""
    every = trainer.val_check_batch
    if not trainer.enable_validation or not isinstance(every, int):
        return False
    return (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0


# ---------------------------------------------------------------- stopping on a signal, SLURM requeue
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
    """``scontrol requeue`` this SLURM job (the requeued job resumes from last.ckpt, see :func:`resume_path`)."""
    job = slurm_job_id()
    if job is None:
        log.warning("requeue signal received but no SLURM job id in the environment: not requeued")
        return
    result = subprocess.run(["scontrol", "requeue", job], check=False)
    if result.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed with status %d", job, result.returncode)
