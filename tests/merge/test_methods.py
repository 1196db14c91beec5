"""The method group: each conf/method file builds its class with the class's own keys and defaults, a key of
another method is refused naming both, and every setting is checked before anything is read."""

from __future__ import annotations

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from mmbert.errors import MergeError
from mmbert.merge import METHODS, Ema, Linear, MergeConfig, Ties, refuse_other_methods_keys

# The keys of conf/merge.yaml itself; the method file adds the rest.
COMMON = {"models", "dtype", "shard_size", "overwrite", "output_dir", "chunk_elements"}
REQUIRED = {"ema": ["decay=0.5"]}  # ema has no default for its one required choice


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="merge", overrides=list(overrides))


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_file_builds_its_class_with_its_keys_and_defaults(name):
    cfg = _compose(f"method={name}", *REQUIRED.get(name, []))
    method = METHODS[name]
    base = {"base"} if method.needs_base else set()
    assert set(cfg) - COMMON == {"method", *method.config_keys(), *base}
    built = instantiate(cfg.method)
    assert type(built) is method
    assert built == method.from_keys({key.split("=")[0]: 0.5 for key in REQUIRED.get(name, [])})


def test_command_line_values_reach_the_method():
    overrides = ["density=0.4", "lambda=2", "weights=[1,2]", "normalize=false", "base=b", "models=[x,y]"]
    config = MergeConfig.from_composed(_compose("method=ties", *overrides, "output_dir=o"))
    assert config.method == Ties(weights=(1.0, 2.0), normalize=False, lam=2.0, density=0.4)
    assert config.base == "b" and config.resolve().parameters()["lambda"] == 2.0


def test_a_key_of_another_method_does_not_exist_for_hydra():
    with pytest.raises(ConfigCompositionException, match="density"):
        _compose("method=linear", "density=0.4")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["method=linear", "density=0.4"],
            r"density=0\.4 does not apply to method=linear \(its keys: weights",
        ),
        (["decay=0.5"], "decay=0.5 does not apply to method=ties"),  # ties is the default
        (["method=ema", "base=/b"], "base=/b does not apply to method=ema"),
        (["method=slerp"], "unknown method 'slerp'; choose one of ties, task_arithmetic, linear, ema"),
    ],
)
def test_command_line_refuses_keys_of_other_methods_in_one_line(overrides, match):
    with pytest.raises(MergeError, match=match):
        refuse_other_methods_keys(overrides, CONF)


def test_command_line_check_leaves_sweeps_and_hydra_flags_to_hydra():
    refuse_other_methods_keys(["-m", "method=ties,linear", "density=0.4", "--cfg", "job"], CONF)
    refuse_other_methods_keys(["method=ema", "half_life=2", "hydra.run.dir=x", "+seed=1"], CONF)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Ties(density=0.0), r"density must be in \(0, 1\]"),
        (lambda: Ties(lam=float("inf")), "lambda must be a finite number"),
        (lambda: Linear(weights=[1.0, -1.0]), "sum to 0: a normalized linear merge is undefined"),
        (lambda: Linear(weights=1.0), "weights must be a list with one number per model"),
        (lambda: Linear(normalize="yes"), "normalize must be true or false"),
        (lambda: Ema(decay=0.5, half_life=2), "needs exactly one of decay"),
        (lambda: Ema(decay=1.0), r"decay must be in \[0, 1\)"),
        (lambda: Ema(half_life=0), "half_life must be a positive number of checkpoints"),
    ],
)
def test_each_method_checks_its_settings_when_built(build, match):
    with pytest.raises(MergeError, match=match):
        build()


def test_ema_records_the_decay_its_half_life_gives():
    ema = Ema(half_life=1)
    assert ema.weights_for(3) == pytest.approx((1 / 7, 2 / 7, 4 / 7))
    assert ema.parameters(ema.weights_for(2)) == {"weights": [1 / 3, 2 / 3], "decay": 0.5, "half_life": 1}
