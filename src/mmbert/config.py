"""Hydra/OmegaConf glue: resolvers used by conf/, and validation that runs before anything is built.

Every check raises :class:`ConfigError` naming the offending key, so a bad value fails in a second rather
than after the data pipeline and the model have been built (or hours into a run).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PHASES = ("pretrain", "midtrain", "decay")
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def _scale(tokens: float | int | str, factor: float | int | str) -> int:
    return round(float(tokens) * float(factor))


def register_resolvers() -> None:
    """``${scale:tokens,factor}`` multiplies a token budget by ``token_scale`` and rounds to an int."""
    if not OmegaConf.has_resolver("scale"):
        OmegaConf.register_new_resolver("scale", _scale)


register_resolvers()


def world_size(trainer_cfg: DictConfig) -> int:
    """Processes the trainer will start: devices per node (resolved like Lightning) times nodes."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        per_node = len(devices)
    elif devices in (-1, "auto", "-1"):
        import torch

        gpu = trainer_cfg.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        per_node = torch.cuda.device_count() if gpu else 1
    else:
        per_node = int(devices)
    return per_node * int(trainer_cfg.get("num_nodes", 1))


def accumulation(cfg: DictConfig, world: int) -> int:
    """Micro-batches per optimizer step so that rows x devices x accumulation == global_batch_rows."""
    rows = int(cfg.data.rows_per_step)
    if rows < 1:
        raise ConfigError(f"data.rows_per_step must be >= 1, got {rows}")
    per_step = rows * world
    if cfg.global_batch_rows % per_step:
        raise ConfigError(
            f"global_batch_rows={cfg.global_batch_rows} is not a multiple of data.rows_per_step ({rows}) "
            f"x devices ({world})"
        )
    return cfg.global_batch_rows // per_step


def _check_range(key: str, value: float, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{key} must be in {lo}{low}, {high}{hi}, got {value}")


def validate(cfg: DictConfig) -> None:
    """Check a composed train config; raises :class:`ConfigError` naming the first bad key."""
    phase = cfg.phase
    if phase.name not in PHASES:
        raise ConfigError(f"phase.name must be one of {PHASES}, got {phase.name!r}")
    model = cfg.model.config
    if phase.seq_len < 16:
        raise ConfigError(f"phase.seq_len must be >= 16, got {phase.seq_len}")
    if phase.seq_len > model.max_position_embeddings:
        raise ConfigError(
            f"phase.seq_len={phase.seq_len} exceeds model.config.max_position_embeddings="
            f"{model.max_position_embeddings}"
        )
    _check_range("phase.mask_ratio", phase.mask_ratio, 0.0, 1.0, low_open=True, high_open=True)
    if phase.mask_ratio_end is not None:
        _check_range("phase.mask_ratio_end", phase.mask_ratio_end, 0.0, 1.0, low_open=True, high_open=True)
    _check_range("phase.tau", phase.tau, 0.0, 1.0, low_open=True, high_open=False)
    _check_range("data.val_mask_ratio", cfg.data.val_mask_ratio, 0.0, 1.0, low_open=True, high_open=True)
    if cfg.token_scale <= 0:
        raise ConfigError(f"token_scale must be > 0, got {cfg.token_scale}")
    accumulation(cfg, world_size(cfg.trainer))
    warmup = cfg.get("batch_warmup")
    if warmup is not None and not 1 <= warmup.min_rows <= cfg.global_batch_rows:
        raise ConfigError(
            f"batch_warmup.min_rows={warmup.min_rows} (model.recipe.{phase.name}.batch_warmup_min_rows) must "
            f"be in [1, global_batch_rows={cfg.global_batch_rows}]"
        )
    init_from = cfg.model.init_from
    if init_from:
        local = Path(str(init_from)).expanduser()
        if not local.exists() and not _HUB_NAME.match(str(init_from)):
            raise ConfigError(f"model.init_from={init_from}: no such file or folder (nor a hub name)")
    elif phase.expects_init:
        log.warning(
            "phase=%s normally starts from the previous phase's weights but model.init_from is not set: "
            "training from random initialisation",
            phase.name,
        )


def check_vocab(vocab_size: int, tokenizer_len: int, tokenizer_name: str) -> None:
    """The embedding must cover every id the tokenizer can produce."""
    if tokenizer_len > vocab_size:
        raise ConfigError(
            f"model.config.vocab_size={vocab_size} is smaller than the tokenizer {tokenizer_name} "
            f"({tokenizer_len} tokens)"
        )
