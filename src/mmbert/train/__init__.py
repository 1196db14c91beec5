"""Training: the LightningModule, optimizers, schedules and the callbacks that apply them."""

from mmbert.train.callbacks import (
    AtomicCheckpointIO,
    BatchSizeWarmupCallback,
    HFExportCallback,
    LRScheduleCallback,
    MaskRatioCallback,
    MixtureReportCallback,
    StepCheckpoint,
    StopAtTokens,
    ThroughputMonitor,
    TokenCheckpoint,
    TokenProgressBar,
)
from mmbert.train.module import MLMModule
from mmbert.train.optim import StableAdamW, adamw, param_groups
from mmbert.train.schedules import BatchSizeWarmup, LRSchedule, MaskSchedule

__all__ = [
    "AtomicCheckpointIO",
    "BatchSizeWarmup",
    "BatchSizeWarmupCallback",
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
