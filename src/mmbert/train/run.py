"""Builds and runs one training job from a composed Hydra config (datamodule -> module -> trainer)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from mmbert import hub
from mmbert.data import load_tokenizer
from mmbert.data.mix.build import instantiate_mix
from mmbert.errors import ConfigError, DataError
from mmbert.train.config import RunShape, scaled_tokens, validate
from mmbert.train.init import init_tokenizer_source
from mmbert.train.resume import AtomicCheckpointIO, check_resume_fits, resume_path, under_slurm

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list:
    """Instantiates every entry of a dict-of-configs group; a null entry means 'left out'."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry is not None]


def available_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines() if Path("/proc/meminfo").exists() else []:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_cpu_training_bytes(cfg: DictConfig) -> int:
    """fp32 training memory on the CPU: weights, gradients and two optimizer moments (16 bytes a parameter)
    plus the activations kept for backward, about 4 * (16 H + 5 I) bytes per token and layer (measured on
    this model's SDPA path at H 384/768 and I 1152/2304; within 10%)."""
    m = cfg.model.config
    H, I, layers, V = m.hidden_size, m.intermediate_size, m.num_hidden_layers, m.vocab_size
    params = V * H + layers * (3 * H * H + H * H + 2 * I * H + I * H) + H * H
    tokens = int(cfg.data.rows_per_device) * int(cfg.data.seq_len)
    overhead = 2 * 2**30  # interpreter, libraries, data pipeline, checkpoint copies
    return overhead + 16 * params + tokens * layers * 4 * (16 * H + 5 * I)


def check_cpu_memory(cfg: DictConfig) -> None:
    """On a CPU, a micro-batch that cannot fit fails here, naming the settings, instead of being OOM-killed."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        return
    need, have = estimate_cpu_training_bytes(cfg), available_memory_bytes()
    if need > have:
        raise ConfigError(
            f"data.rows_per_device={cfg.data.rows_per_device} x phase.seq_len={cfg.data.seq_len} needs about "
            f"{need / 2**30:.0f} GiB to train this model (hidden {cfg.model.config.hidden_size}, "
            f"{cfg.model.config.num_hidden_layers} layers) on the CPU; {have / 2**30:.0f} GiB are available: lower "
            "data.rows_per_device (more micro-batches keep global_batch_rows), or use experiment=quick"
        )


def check_init_tokenizer(init_from: str, tokenizer, tokenizer_name: str) -> None:
    """Starting weights only make sense with the tokenizer they were trained with: token ids would otherwise
    mean other tokens (e.g. mmBERT's Gemma 2 weights fed ids of the sample corpus tokenizer)."""
    source = init_tokenizer_source(init_from)
    if source is None:
        return
    try:
        theirs = load_tokenizer(source)
    except DataError as e:
        log.warning("could not load the tokenizer of model.init_from=%s to compare it: %s", init_from, e)
        return
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"model.init_from={init_from} was trained with the tokenizer {source}, but the data uses "
            f"{tokenizer_name} (data_mix.tokenizer): token ids would mean other tokens. Use a data_mix with "
            f"that tokenizer (e.g. data_mix.tokenizer={source})"
        )


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    shape = validate(cfg)
    # What the Hub holds is asked for once and kept here: every rank, worker and resumed run reads the same
    # commit's files and tokenizer.
    hub.use_folder(Path(cfg.paths.output_dir) / "hub")
    check_cpu_memory(cfg)
    model_config = hydra.utils.instantiate(cfg.model.config)
    # A checkpoint of another model size fails here, in one line, rather than after the data is set up.
    check_resume_fits(resume_path(cfg), model_config)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data, _recursive_=False, mix=instantiate_mix(cfg.data.mix))
    datamodule.check_vocab(cfg.model.config.vocab_size)
    if cfg.model.init_from:
        check_init_tokenizer(str(cfg.model.init_from), datamodule.tokenizer, datamodule.tokenizer_name)

    module = hydra.utils.instantiate(
        cfg.module,
        model_config=model_config,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        tokenizer=datamodule.tokenizer_name,
        _recursive_=False,
    )

    callbacks = _instantiate_group(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):
        # Lightning refuses a progress-bar callback when the bar is disabled.
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = _instantiate_group(cfg.get("logger"))
    _quiet_lightning_tips()
    _log_plan(cfg, shape)
    # One Lightning batch is one optimizer step (MLMModule steps its micro-batches itself), so every
    # interval in batches is one in optimizer steps.
    plugins: list = [AtomicCheckpointIO()]
    if under_slurm():
        # StepCheckpoint handles SLURM's signals at step boundaries; Lightning's own handler would save an
        # hpc checkpoint from inside the signal handler, in the middle of a step.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins
    )
    return datamodule, module, trainer


def _log_plan(cfg: DictConfig, shape: RunShape) -> None:
    """One line a researcher can check before waiting for the first step: batch shape and phase length."""
    seq_len, rows = int(cfg.data.seq_len), int(cfg.data.rows_per_device)
    step_tokens = cfg.global_batch_rows * seq_len
    budget = scaled_tokens(cfg, "recipe.tokens")
    log.info(
        "phase=%s: up to %d rows x %d tokens per micro-batch, %d micro-batch(es) x %d device(s) = %d rows "
        "(%s tokens) per optimizer step at the full batch; token budget %s (~%d steps)",
        cfg.phase.name, rows, seq_len, shape.micro_batches, shape.world, cfg.global_batch_rows,
        f"{step_tokens:,}", f"{budget:,}", -(-budget // step_tokens),
    )  # fmt: skip


def _quiet_known_warnings() -> None:
    # Validation batches are a fixed, sized IterableDataset read in the main process: Lightning's warning
    # about __len__ with several workers does not apply. LeafSpec: Lightning's own use of a torch API.
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # MLMModule steps the optimizer itself; a step checkpoint holds the weights after that step, as intended.
    warnings.filterwarnings("ignore", message=r".*ModelCheckpoint with manual optimization.*")


class _NoTips(logging.Filter):
    """Drops Lightning's advertising (``💡 Tip: ... try installing litlogger``), which it logs once per
    trainer and which no setting turns off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_NO_TIPS = _NoTips()


def _quiet_lightning_tips() -> None:
    # Lightning logs its tips with rank_zero_info, through one of these two loggers (whichever of
    # lightning.pytorch and lightning.fabric set it last); a logger does not add the same filter twice.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NO_TIPS)


def run(cfg: DictConfig) -> L.Trainer:
    _quiet_known_warnings()
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg), weights_only=True)
    return trainer
