"""Training: the LightningModule, optimizers, schedules, the callbacks that apply them, and resuming."""

from mmbert.train.callbacks.budget import StopAtTokens
from mmbert.train.callbacks.export import HFExportCallback
from mmbert.train.callbacks.mixture import MixtureReportCallback
from mmbert.train.callbacks.progress import DataWaitMonitor, ThroughputMonitor, TokenProgressBar
from mmbert.train.callbacks.schedules import (
    BatchSizeWarmupCallback,
    LRScheduleCallback,
    MaskRatioCallback,
)
from mmbert.train.module import MLMModule
from mmbert.train.optim import StableAdamW, adamw, param_groups
from mmbert.train.resume import AtomicCheckpointIO, StepCheckpoint, TokenCheckpoint
from mmbert.train.schedules import BatchSizeWarmup, LRSchedule, MaskSchedule

__all__ = [
    "AtomicCheckpointIO",
    "BatchSizeWarmup",
    "BatchSizeWarmupCallback",
    "DataWaitMonitor",
    "HFExportCallback",
    "LRSchedule",
    "LRScheduleCallback",
    "MLMModule",
    "MaskRatioCallback",
    "MaskSchedule",
    "MixtureReportCallback",
    "StableAdamW",
    "StepCheckpoint",
    "StopAtTokens",
    "ThroughputMonitor",
    "TokenCheckpoint",
    "TokenProgressBar",
    "adamw",
    "param_groups",
]
