"""Every option of every config group composes and instantiates; bad values fail early, naming the key."""

from __future__ import annotations

import re

import hydra
import pytest
from helpers import CONF, compose_train
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf, open_dict

from mmbert.errors import ConfigError
from mmbert.train.config import validate

# conf/task belongs to evaluate.py (conf/eval.yaml; test_downstream composes every task) and conf/method to
# merge.py (conf/merge.yaml; tests/merge/test_methods.py composes every method).
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra", "local", "task", "method"}
)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
GPU_TRAINERS = {"gpu", "ddp", "fsdp"}


def test_every_group_has_options():
    assert {"phase", "model", "data_mix", "trainer", "logger", "callbacks", "paths", "experiment"} <= set(
        GROUPS
    )


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_train([f"{group}={option}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    if group == "trainer" and option in GPU_TRAINERS:
        # No GPU here: build the same trainer on the CPU to check every other argument.
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.devices = 1
        cfg.trainer.precision = "32-true"
        if option == "fsdp":
            strategy = hydra.utils.instantiate(cfg.trainer.strategy)
            assert type(strategy).__name__ == "FSDP2Strategy"
            cfg.trainer.strategy = "auto"
        else:
            with open_dict(cfg.trainer):
                cfg.trainer.pop("strategy", None)
    validate(cfg)
    model_config = hydra.utils.instantiate(cfg.model.config)
    assert model_config.hidden_size % model_config.num_attention_heads == 0
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    assert callable(optimizer)
    mix = hydra.utils.instantiate(cfg.data_mix)
    assert mix is not None
    for name in ("lr_schedule", "mask_schedule", "batch_warmup"):
        hydra.utils.instantiate(cfg[name])
    for entry in cfg.callbacks.values():
        if entry is not None:
            hydra.utils.instantiate(entry)
    for entry in cfg.logger.values():
        if entry is not None and "Wandb" not in entry._target_:
            hydra.utils.instantiate(entry)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    # Phases end on their token budget (StopAtTokens); only smoke-test experiments cap steps.
    assert trainer.max_steps == cfg.trainer.get("max_steps", -1)


def test_slurm_launcher_composes(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes == 2 and launcher.tasks_per_node == launcher.gpus_per_node


def test_phases_set_the_recipe_values(tmp_path):
    expected = {
        "pretrain": (1024, 0.25, 0.7, 10_000.0, "constant"),  # the released base config: 25%
        "midtrain": (8192, 0.15, 0.5, 160_000.0, "constant"),
        "decay": (8192, 0.05, 0.3, 160_000.0, "one_minus_sqrt"),
    }
    for phase, (seq_len, mask, tau, theta, kind) in expected.items():
        cfg = compose_train([f"phase={phase}", "model=base"], output_dir=tmp_path)
        assert cfg.data.seq_len == seq_len
        assert cfg.mask_schedule.start == mask and cfg.data.tau == tau
        assert cfg.model.config.global_rope_theta == theta == cfg.model.config.local_rope_theta
        assert cfg.lr_schedule.kind == kind
    decay = compose_train(["phase=decay", "model=base"], output_dir=tmp_path)
    assert decay.lr_schedule.total_tokens == decay.lr_schedule.decay_tokens == 100_000_000_000
    assert decay.lr_schedule.alpha_f == 0.02
    small = compose_train(["phase=decay", "model=small", "token_scale=0.001"], output_dir=tmp_path)
    assert small.lr_schedule.total_tokens == 100_000_000 and small.lr_schedule.alpha_f == 0.04
    assert small.lr_schedule.kind == "linear", "the released small config decays linearly"
    small_pre = compose_train(["phase=pretrain", "model=small"], output_dir=tmp_path)
    assert small_pre.mask_schedule.start == 0.3
    assert small.optimizer.lr == 4e-4 and small.optimizer.weight_decay == 4e-5
    pre = compose_train(["phase=pretrain", "model=base"], output_dir=tmp_path)
    assert pre.batch_warmup.min_rows == 48 and pre.batch_warmup.max_rows == 4608
    assert pre.batch_warmup.warmup_tokens == 60_000_000_000


@pytest.mark.parametrize(
    "override, key",
    [
        ("phase.seq_len=16384", "phase.seq_len"),
        ("phase.seq_len=8", "phase.seq_len"),
        ("data.rows_per_device=0", "data.rows_per_device: rows_per_device must be"),
        ("recipe.mask_ratio=1.0", "mask_schedule: mask ratio start"),
        ("recipe.mask_ratio=0", "mask_schedule: mask ratio start"),
        ("recipe.mask_ratio_end=1.5", "mask_schedule: mask ratio end"),
        ("data.val_mask_ratio=0", "data.val_mask_ratio"),
        ("recipe.lr_schedule=cosine", "lr_schedule: lr schedule kind"),
        ("phase.tau=1.5", "phase.tau"),
        ("phase.tau=0", "phase.tau"),
        ("global_batch_rows=0", "global_batch_rows"),
        ("model.init_from=/no/such/checkpoint.ckpt", "model.init_from"),
        ("token_scale=0", "token_scale"),
        ("batch_warmup.min_rows=9", "batch_warmup: need 1 <= min_rows <= max_rows"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key, tmp_path):
    cfg = compose_train([override], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(cfg)


@pytest.mark.parametrize("override", ["phase=warmup", "model=huge", "data_mix=klingon"])
def test_unknown_group_option_is_named(override, tmp_path):
    with pytest.raises(MissingConfigException, match=override.split("=")[1]):
        compose_train([override], output_dir=tmp_path)


def test_missing_init_warns_for_later_phases(tmp_path, caplog):
    cfg = compose_train(["phase=decay"], output_dir=tmp_path)
    with caplog.at_level("WARNING"):
        validate(cfg)
    assert "model.init_from is not set" in caplog.text


def test_the_papers_values_are_one_override_away(tmp_path):
    base = compose_train(["phase=pretrain", "model=base", "recipe.mask_ratio=0.3"], tmp_path)
    assert base.mask_schedule.start == 0.3
    small = compose_train(["phase=decay", "model=small", "recipe.lr_schedule=one_minus_sqrt"], tmp_path)
    assert small.lr_schedule.kind == "one_minus_sqrt" and small.lr_schedule.alpha_f == 0.04


@pytest.mark.parametrize("size, dropout", [("tiny", 0.0), ("small", 0.1), ("base", 0.1)])
def test_dropouts_follow_the_released_configs(size, dropout, tmp_path):
    config = hydra.utils.instantiate(compose_train([f"model={size}"], tmp_path).model.config)
    assert config.attention_output_dropout == dropout and config.attention_dropout == 0.0
