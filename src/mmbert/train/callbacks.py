"""Thin, stateful callbacks that apply the pure schedules to the optimizer and the data.

Every schedule is a function of ``MLMModule.tokens_seen``, which checkpoints carry; each callback only reads
it and pushes a value somewhere. What a callback applied last is in its ``state_dict`` so a resumed run can
be checked against the schedule.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections import deque
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from tqdm.auto import tqdm

from mmbert.train.preemption import Preempted, StopRequest, requeue_job
from mmbert.train.schedules import BatchSizeWarmup, LRSchedule, MaskSchedule
from mmbert.train.throughput import device_peak_flops, flops_per_token

log = logging.getLogger(__name__)


def _datamodule(trainer: L.Trainer):
    dm = getattr(trainer, "datamodule", None)
    if dm is None:
        raise RuntimeError("this callback needs the trainer to be fitted with a datamodule")
    return dm


class LRScheduleCallback(L.Callback):
    """Sets every param group's ``lr`` to ``peak_lr * schedule(tokens_seen)`` before each step."""

    def __init__(self, schedule: LRSchedule) -> None:
        self.schedule = schedule
        self.last_multiplier = 1.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.last_multiplier = self.schedule(pl_module.tokens_seen)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = (
                    group.get("peak_lr", group.get("initial_lr", group["lr"])) * self.last_multiplier
                )
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        pl_module.log("train/lr", lr, on_step=True, on_epoch=False)

    def on_train_start(self, trainer, pl_module) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                # torch's own optimizers have no peak_lr; remember the configured one once.
                group.setdefault("peak_lr", group["lr"])

    def state_dict(self) -> dict:
        return {"last_multiplier": self.last_multiplier}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_multiplier = float(state_dict["last_multiplier"])


class MaskRatioCallback(L.Callback):
    """Hands the data the mask ratio for the next batch (masking happens on the main process)."""

    def __init__(self, schedule: MaskSchedule) -> None:
        self.schedule = schedule
        self.current = schedule(0)

    def _apply(self, trainer, pl_module) -> None:
        self.current = self.schedule(pl_module.tokens_seen)
        _datamodule(trainer).set_mask_ratio(self.current)

    def on_train_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("train/mask_ratio", self.current, on_step=True, on_epoch=False)
        self._apply(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"current": self.current}

    def load_state_dict(self, state_dict: dict) -> None:
        self.current = float(state_dict["current"])


class BatchSizeWarmupCallback(L.Callback):
    """Sets the global rows of the next optimizer step from the schedule, by tokens seen.

    The datamodule gives each device its share of those rows, in as many micro-batches as it takes, so the
    rows trained follow the schedule exactly on any number of devices (``train/batch_rows``, logged by the
    module, is what was trained).
    """

    def __init__(self, schedule: BatchSizeWarmup) -> None:
        self.schedule = schedule
        self.current = schedule(0)

    def _apply(self, trainer, pl_module) -> None:
        self.current = self.schedule(pl_module.tokens_seen, trainer.world_size)
        _datamodule(trainer).set_step_rows(self.current)

    def on_train_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._apply(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"current": self.current}

    def load_state_dict(self, state_dict: dict) -> None:
        self.current = int(state_dict["current"])


class StopAtTokens(L.Callback):
    """Ends the run once the phase's token budget is consumed (the data stream itself never ends)."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = int(max_tokens)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.max_tokens > 0 and pl_module.tokens_seen >= self.max_tokens:
            trainer.should_stop = True


class MixtureReportCallback(L.Callback):
    """Writes ``mixture.json`` (target weights, the phase's planned tokens and passes, then realised tokens)
    and logs ``data/tokens/<lang>``."""

    def __init__(
        self, output_dir: str, log_every_n_steps: int = 50, budget_tokens: int | None = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.budget_tokens = budget_tokens
        self.log_every_n_steps = log_every_n_steps
        self.global_tokens: dict[str, int] = {}

    def _reduce(self, trainer, pl_module) -> dict[str, int]:
        dm = _datamodule(trainer)
        local = dm.realised_tokens
        languages = list(dm.languages)
        vec = torch.tensor([float(local.get(lang, 0)) for lang in languages], device=pl_module.device)
        vec = trainer.strategy.reduce(vec, reduce_op="sum")
        return {lang: int(v) for lang, v in zip(languages, vec.tolist(), strict=True)}

    def _write(self, trainer) -> None:
        if not trainer.is_global_zero:
            return
        report = _datamodule(trainer).mixture_report(self.budget_tokens)
        for lang, entry in report["languages"].items():
            entry["realised_tokens"] = self.global_tokens.get(lang, 0)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.output_dir / "mixture.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
        os.replace(tmp, self.output_dir / "mixture.json")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.global_step % self.log_every_n_steps) != 0:
            return
        self.global_tokens = self._reduce(trainer, pl_module)
        pl_module.log_dict(
            {f"data/tokens/{lang}": float(n) for lang, n in self.global_tokens.items()},
            on_step=True,
            on_epoch=False,
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.global_tokens = self._reduce(trainer, pl_module)
        self._write(trainer)

    def state_dict(self) -> dict:
        return {"global_tokens": dict(self.global_tokens)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.global_tokens = dict(state_dict["global_tokens"])


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


class HFExportCallback(L.Callback):
    """Exports the final weights (and tokenizer) as a Hugging Face folder when training ends."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from mmbert.checkpoint.hf import save_hf_folder

        save_hf_folder(pl_module.net, self.output_dir, tokenizer=pl_module.hparams.tokenizer)
        log.info("Hugging Face export written to %s", self.output_dir)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every N steps that also saves the final step, saves after a validation due on the
    same step, and stops gracefully on a signal.

    A phase ends when its token budget is spent, rarely on a multiple of ``every_n_train_steps``; without
    the final save the next phase (``model.init_from=.../last.ckpt``) would start from weights up to N steps
    old. Saving after the validation of that step means a run killed during it repeats it on resume.

    SIGTERM, SIGINT and (under SLURM) ``requeue_signal`` finish the current optimizer step, write
    ``last.ckpt`` and exit with status 128 + signal (:mod:`mmbert.train.preemption`); the requeue signal also
    requeues the SLURM job. Lightning runs checkpoint callbacks after all others, so the saved state is the
    one a step checkpoint of the same step would hold, and resuming from it equals the uninterrupted run.
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file and renames it, so a kill mid-write never corrupts it."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        fs = get_filesystem(path)
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        fs.mv(tmp, str(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Resuming reads the checkpoint like every other load here: without running pickled code."""
        from mmbert.checkpoint import Format, safe_torch_load

        checkpoint, _ = safe_torch_load(path, [Format.LIGHTNING], mmap=False)
        return checkpoint


class ThroughputMonitor(L.Callback):
    """Logs ``train/tokens_per_s`` (real tokens of all ranks per second of wall time, data loading included,
    over the last ``window`` steps) and ``train/mfu`` (model FLOPs per second over the devices' peak).

    ``peak_flops`` is one device's peak; None looks a GPU up in
    :data:`mmbert.train.throughput.BF16_PEAK_FLOPS` and logs no MFU on a CPU or an unknown device.
    """

    def __init__(self, peak_flops: float | None = None, window: int = 10) -> None:
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"callbacks.throughput.peak_flops must be > 0, got {peak_flops}")
        if window < 1:
            raise ValueError(f"callbacks.throughput.window must be >= 1, got {window}")
        self.peak_flops, self.window = peak_flops, window
        self._marks: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self._peak: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._peak = self.peak_flops
        if self._peak is None and pl_module.device.type == "cuda":
            name = torch.cuda.get_device_name(pl_module.device)
            self._peak = device_peak_flops(name)
            if self._peak is None:
                log.info(
                    "no bf16 peak known for %s: set callbacks.throughput.peak_flops to log train/mfu", name
                )
        self._marks.clear()
        self._marks.append((time.perf_counter(), pl_module.tokens_seen))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._marks.append((time.perf_counter(), pl_module.tokens_seen))
        (t0, n0), (t1, n1) = self._marks[0], self._marks[-1]
        if t1 <= t0:
            return
        rate = (n1 - n0) / (t1 - t0)
        pl_module.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)
        if self._peak is not None:
            dm = _datamodule(trainer)
            flops = flops_per_token(pl_module.net.config, dm.seq_len, dm.mask_ratio or 0.0)
            pl_module.log("train/mfu", rate * flops / (self._peak * trainer.world_size), on_step=True)


class TokenProgressBar(ProgressBar):
    """One bar over the phase's token budget: tokens seen / total, tokens/s, ETA, loss and step."""

    def __init__(self, total_tokens: int, refresh_rate: int = 1) -> None:
        super().__init__()
        self.total_tokens, self.refresh_rate = int(total_tokens), max(1, refresh_rate)
        self._bar: tqdm | None = None
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._bar = tqdm(
            total=self.total_tokens or None, initial=pl_module.tokens_seen, desc=trainer.state.stage or "train",
            unit="tok", unit_scale=True, dynamic_ncols=True, smoothing=0.05,
        )  # fmt: skip

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is None or trainer.global_step % self.refresh_rate:
            return
        self._bar.update(pl_module.tokens_seen - self._bar.n)
        metrics = trainer.callback_metrics
        postfix = {"step": trainer.global_step}
        for key, name in (("train/loss", "loss"), ("val/loss", "val")):
            if key in metrics:
                postfix[name] = f"{float(metrics[key]):.3f}"
        self._bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.update(pl_module.tokens_seen - self._bar.n)
            self._bar.close()
            self._bar = None
