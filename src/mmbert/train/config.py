"""Hydra/OmegaConf glue: resolvers used by conf/, and validation that runs before anything is built.

Every check raises :class:`ConfigError` naming the offending key, so a bad value fails in a second rather
than after the data pipeline and the model have been built (or hours into a run).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from mmbert.errors import ConfigError

log = logging.getLogger(__name__)

PHASES = ("pretrain", "midtrain", "decay")
# Schedule nodes of conf/train.yaml and where their numbers come from (conf/recipe/<size>_<phase>.yaml).
SCHEDULES = {
    "lr_schedule": "recipe.lr_schedule / warmup_tokens / tokens / decay_tokens / alpha_f",
    "mask_schedule": "recipe.mask_ratio / mask_ratio_end",
    "batch_warmup": "recipe.batch_warmup_min_rows / batch_warmup_tokens, global_batch_rows",
}
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class RunShape:
    """How a run spreads its global batch: processes, and micro-batches per optimizer step on each."""

    world: int
    micro_batches: int


def scaled_tokens(cfg: DictConfig, key: str) -> int:
    """The token budget at ``key`` (e.g. ``recipe.tokens``) times ``token_scale``, rounded: the one place a
    recipe's real budgets become a run's."""
    return round(float(OmegaConf.select(cfg, key, throw_on_missing=True)) * float(cfg.token_scale))


def _by_phase(key: str, _root_: DictConfig) -> object:
    return OmegaConf.select(_root_, key, throw_on_missing=True)[_root_.phase.name]


def register_resolvers() -> None:
    """``${scaled:recipe.<key>}``: a recipe budget times ``token_scale``; ``${by_phase:<key>}``: the entry of
    the mapping at ``key`` for the current ``phase.name`` (an experiment's per-phase values). Both take a key
    rather than a nested interpolation, so every config value is one hop from where it is written."""
    if not OmegaConf.has_resolver("scaled"):
        OmegaConf.register_new_resolver("scaled", lambda key, _root_: scaled_tokens(_root_, key))
    if not OmegaConf.has_resolver("by_phase"):
        OmegaConf.register_new_resolver("by_phase", _by_phase)


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


def _world_size(trainer_cfg: DictConfig) -> int:
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


def _micro_batches(cfg: DictConfig, world: int) -> int:
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


def validate(cfg: DictConfig) -> RunShape:
    """Check a composed train config once, before anything is built, and return the run's shape; raises
    :class:`ConfigError` naming the first bad key."""
    phase = cfg.phase
    if phase.name not in PHASES:
        raise ConfigError(f"phase.name must be one of {PHASES}, got {phase.name!r}")
    if cfg.token_scale <= 0:
        raise ConfigError(f"token_scale must be > 0, got {cfg.token_scale}")
    model = cfg.model.config
    _check_objects(cfg)
    if phase.seq_len > model.max_position_embeddings:
        raise ConfigError(
            f"phase.seq_len={phase.seq_len} exceeds model.config.max_position_embeddings="
            f"{model.max_position_embeddings}"
        )
    world = _world_size(cfg.trainer)
    shape = RunShape(world, _micro_batches(cfg, world))
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
    return shape
