"""Builds and runs one training job from a composed Hydra config (datamodule -> module -> trainer)."""

from __future__ import annotations

import logging

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from mmbert.config import accumulation, check_vocab, validate, world_size
from mmbert.train.callbacks import AtomicCheckpointIO

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list:
    """Instantiates every entry of a dict-of-configs group; a null entry means 'left out'."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry is not None]


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(
        cfg.data, _recursive_=False, mix=hydra.utils.instantiate(cfg.data.mix)
    )
    tokenizer = datamodule.tokenizer
    check_vocab(cfg.model.config.vocab_size, len(tokenizer), datamodule.tokenizer_name)

    model_config = hydra.utils.instantiate(cfg.model.config)
    module = hydra.utils.instantiate(
        cfg.module,
        model_config=model_config,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        tokenizer=datamodule.tokenizer_name,
        _recursive_=False,
    )

    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer_cfg = cfg.trainer
    accumulate = accumulation(cfg, world_size(trainer_cfg))
    _log_plan(cfg, accumulate, world_size(trainer_cfg))
    extra = {}
    if isinstance(trainer_cfg.get("val_check_interval"), int):
        # The config counts optimizer steps, like every other interval here; Lightning counts batches.
        extra["val_check_interval"] = trainer_cfg.val_check_interval * accumulate
    trainer = hydra.utils.instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers or False,
        accumulate_grad_batches=accumulate,
        plugins=[AtomicCheckpointIO()],
        **extra,
    )
    return datamodule, module, trainer


def _log_plan(cfg: DictConfig, accumulate: int, world: int) -> None:
    """One line a researcher can check before waiting for the first step: batch shape and phase length."""
    seq_len, rows = int(cfg.data.seq_len), int(cfg.data.rows_per_step)
    step_tokens = cfg.global_batch_rows * seq_len
    budget = int(cfg.lr_schedule.total_tokens)
    log.info(
        "phase=%s: %d rows x %d tokens per micro-batch, x %d accumulation x %d device(s) = %d rows "
        "(%s tokens) per optimizer step; token budget %s (~%d steps)",
        cfg.phase.name, rows, seq_len, accumulate, world, cfg.global_batch_rows,
        f"{step_tokens:,}", f"{budget:,}", -(-budget // step_tokens),
    )  # fmt: skip


def run(cfg: DictConfig) -> L.Trainer:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return trainer
