"""What a researcher watches while a run trains: tokens per second, MFU and a bar over the token budget.

The maths (model FLOPs per token, device peaks) is in :mod:`mmbert.train.throughput`; these callbacks only
time the steps and report.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm

from mmbert.train.callbacks.datamodule import fitted_datamodule
from mmbert.train.throughput import device_peak_flops, flops_per_token

log = logging.getLogger(__name__)


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
            dm = fitted_datamodule(trainer)
            flops = flops_per_token(pl_module.net.config, dm.seq_len, dm.mask_ratio or 0.0)
            pl_module.log("train/mfu", rate * flops / (self._peak * trainer.world_size), on_step=True)


class DataWaitMonitor(L.Callback):
    """Logs ``data/wait_s`` (seconds the step waited for its training rows: a slow Hub or too few workers shows
    here, not as an unexplained drop in tokens/s) and ``data/hub_retries`` (Hub calls retried so far on this
    rank, its dataloader workers included); when training ends, logs the totals by kind."""

    def __init__(self) -> None:
        self.total_wait_s = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = fitted_datamodule(trainer)
        wait = dm.take_wait()
        self.total_wait_s += wait
        retries = sum(v for k, v in dm.hub_stats().items() if k.startswith("retries/"))
        pl_module.log_dict(
            {"data/wait_s": wait, "data/hub_retries": float(retries)}, on_step=True, on_epoch=False
        )

    def on_train_end(self, trainer, pl_module) -> None:
        stats = fitted_datamodule(trainer).hub_stats()
        kinds = ", ".join(
            f"{k.removeprefix('retries/')} x{int(v)}" for k, v in sorted(stats.items()) if k != "wait_s"
        )
        log.info(
            "rank %d waited %.1f s for training rows; Hub: %.1f s in requests, retries: %s",
            trainer.global_rank, self.total_wait_s, stats.get("wait_s", 0.0), kinds or "none",
        )  # fmt: skip


class TokenProgressBar(ProgressBar):
    """One bar over the phase's token budget: tokens seen / total, tokens/s, ETA, loss and step, and the seconds
    the step waited for data and the Hub retries when there are any."""

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
        if float(metrics.get("data/wait_s", 0.0)) >= 0.1:
            postfix["data_wait"] = f"{float(metrics['data/wait_s']):.1f}s"
        if float(metrics.get("data/hub_retries", 0.0)):
            postfix["hub_retries"] = int(metrics["data/hub_retries"])
        self._bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.update(pl_module.tokens_seen - self._bar.n)
            self._bar.close()
            self._bar = None
