"""Thin, stateful callbacks that apply the pure schedules to the optimizer and the data.

Every schedule (:mod:`mmbert.train.schedules`) is a function of ``MLMModule.tokens_seen``, which checkpoints
carry; each callback only reads it and pushes a value somewhere. What a callback applied last is in its
``state_dict`` so a resumed run can be checked against the schedule.
"""

from __future__ import annotations

import lightning as L

from mmbert.train.callbacks.datamodule import fitted_datamodule
from mmbert.train.schedules import BatchSizeWarmup, LRSchedule, MaskSchedule


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
        fitted_datamodule(trainer).set_mask_ratio(self.current)

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
        fitted_datamodule(trainer).set_step_rows(self.current)

    def on_train_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._apply(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"current": self.current}

    def load_state_dict(self, state_dict: dict) -> None:
        self.current = int(state_dict["current"])
