"""Hydra/OmegaConf glue: resolvers used by conf/, and validation that runs before anything is built.

Every check raises :class:`ConfigError` naming the offending key, so a bad value fails in a second rather
than after the data pipeline and the model have been built (or hours into a run).
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from mmbert.errors import ConfigError

log = logging.getLogger(__name__)

PHASES = ("pretrain", "midtrain", "decay")
# Schedule nodes of conf/train.yaml and where their numbers come from.
SCHEDULES = {
    "lr_schedule": "model.recipe.<phase>.lr_schedule / warmup_tokens / tokens / decay_tokens / alpha_f",
    "mask_schedule": "model.recipe.<phase>.mask_ratio, phase.mask_ratio_end",
    "batch_warmup": "model.recipe.<phase>.batch_warmup_min_rows / batch_warmup_tokens, global_batch_rows",
}
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def _scale(tokens: float | int | str, factor: float | int | str) -> int:
    return round(float(tokens) * float(factor))


def register_resolvers() -> None:
    """``${scale:tokens,factor}`` multiplies a token budget by ``token_scale`` and rounds to an int."""
    if not OmegaConf.has_resolver("scale"):
        OmegaConf.register_new_resolver("scale", _scale)


register_resolvers()


def compose_train(
    overrides: list[str], output_dir: Path | None = None, conf_dir: Path | None = None
) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` as ``python train.py`` composes it, Hydra's run-time
    config set (``${hydra:...}`` resolves; ``output_dir`` becomes the run folder), for running
    :func:`mmbert.train.run.run` in-process (tests, scripts)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from mmbert.data.paths import repo_root

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir or repo_root() / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=list(overrides), return_hydra_config=output_dir is not None
        )
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


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


def micro_batches(cfg: DictConfig, world: int) -> int:
    """Micro-batches per optimizer step at the full batch: each device trains ``global_batch_rows / world``
    rows a step, ``data.rows_per_device`` at a time (the last micro-batch takes the remainder)."""
    rows = int(cfg.data.rows_per_device)
    if cfg.global_batch_rows < 1 or cfg.global_batch_rows % world:
        raise ConfigError(
            f"global_batch_rows={cfg.global_batch_rows} must be a positive multiple of the devices ({world})"
        )
    return -(-cfg.global_batch_rows // world // rows)


def _check_objects(cfg: DictConfig) -> None:
    """Each recipe number is checked by the object that owns it; building the cheap ones here makes a bad
    value fail in a second, named by its config node, rather than once data and model are built."""
    from hydra.utils import instantiate

    from mmbert.data.datamodule import check_shape
    from mmbert.data.masking import check_mask_ratio
    from mmbert.data.sampling import check_tau

    checks = {
        "phase.seq_len / data.rows_per_device": lambda: check_shape(
            cfg.phase.seq_len, cfg.data.rows_per_device
        ),
        "phase.tau": lambda: check_tau(cfg.phase.tau),
        "data.val_mask_ratio": lambda: check_mask_ratio("val_mask_ratio", cfg.data.val_mask_ratio),
        **{key: functools.partial(instantiate, cfg[key]) for key in SCHEDULES if cfg.get(key) is not None},
    }
    for key, check in checks.items():
        try:
            check()
        except InstantiationException as e:
            raise ConfigError(f"{key}: {e.__cause__ or e} (from {SCHEDULES[key]})") from e
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from e


def validate(cfg: DictConfig) -> None:
    """Check a composed train config; raises :class:`ConfigError` naming the first bad key."""
    phase = cfg.phase
    if phase.name not in PHASES:
        raise ConfigError(f"phase.name must be one of {PHASES}, got {phase.name!r}")
    model = cfg.model.config
    _check_objects(cfg)
    if phase.seq_len > model.max_position_embeddings:
        raise ConfigError(
            f"phase.seq_len={phase.seq_len} exceeds model.config.max_position_embeddings="
            f"{model.max_position_embeddings}"
        )
    if cfg.token_scale <= 0:
        raise ConfigError(f"token_scale must be > 0, got {cfg.token_scale}")
    micro_batches(cfg, world_size(cfg.trainer))
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
