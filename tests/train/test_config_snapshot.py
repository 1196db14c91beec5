"""The composed train config of every size x phase (and of the sample, folder, MDS and released mixes, and the
toy and quick experiments) equals, value for value, the snapshot in tests/golden/composed_configs.json taken
before the layout move of issue 17 (per-size ``model.recipe.<phase>`` tables -> one flat
``conf/recipe/<size>_<phase>.yaml``). Keys that moved are mapped explicitly below; nothing else may differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import GOLDEN, REPO, compose_train
from omegaconf import OmegaConf

SNAPSHOT = json.loads((GOLDEN / "composed_configs.json").read_text())
PHASES = ("pretrain", "midtrain", "decay")
# Old key -> new key, whatever the phase.
RENAMED = {
    "data.rows_per_step": "data.rows_per_device",
    "phase.mask_ratio_end": "recipe.mask_ratio_end",
    "phase.rope_theta_global": "recipe.rope_theta_global",
    "phase.rope_theta_local": "recipe.rope_theta_local",
    "model.recipe.global_batch_rows": "recipe.global_batch_rows",
}


def flatten(node: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    if not node:
        return {prefix[:-1]: {}}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


# The toy experiment no longer sets the sample mix's subset for every mix (it broke data_mix=folder with it):
# the sample mix's own default, the phase's name, is the same languages ("decay" is "decay-all").
TOY_SUBSET_KEYS = {"toy.subset.pretrain", "toy.subset.midtrain", "toy.subset.decay"}
SAMPLE_SUBSET_ALIASES = {"decay-all": "decay"}


def moved(old: dict[str, object], phase: str) -> dict[str, object]:
    """The snapshot with its keys where they live now: the current phase's row of the size's recipe table
    becomes ``recipe.*``; the other phases' rows are the other snapshots' ``recipe.*`` (checked there)."""
    new: dict[str, object] = {}
    for key, value in old.items():
        if key in TOY_SUBSET_KEYS:
            continue
        if key in ("data_mix.subset", "data.mix.subset") and "toy.seq_len.decay" in old:
            new[key] = SAMPLE_SUBSET_ALIASES.get(value, value)
        elif key in RENAMED:
            new[RENAMED[key]] = value
        elif key == f"model.recipe.rows_per_device.{phase}":
            new["recipe.rows_per_device"] = value
        elif key.startswith(f"model.recipe.{phase}."):
            new["recipe." + key.rsplit(".", 1)[1]] = value
        elif not key.startswith("model.recipe."):
            new[key] = value
    return new


@pytest.mark.parametrize("overrides", sorted(SNAPSHOT))
def test_composed_config_matches_the_snapshot(overrides):
    cfg = compose_train(overrides.split(), output_dir=Path("/RUN"))
    now = flatten(OmegaConf.to_container(cfg, resolve=True))
    expected = moved(SNAPSHOT[overrides], cfg.phase.name)
    assert sorted(now) == sorted(expected), {
        "new keys": sorted(set(now) - set(expected)),
        "lost keys": sorted(set(expected) - set(now)),
    }
    differ = {
        k: (expected[k], now[k])
        for k in expected
        if expected[k] != now[k] or type(expected[k]) is not type(now[k])
    }
    assert not differ, differ


def test_the_sample_subset_aliases_are_the_same_languages():
    subsets = json.loads((REPO / "data" / "sample" / "languages.json").read_text())
    for old, new in SAMPLE_SUBSET_ALIASES.items():
        assert subsets["subsets"][old] == subsets["subsets"][new]


def test_the_snapshot_covers_every_size_and_phase():
    covered = {(o.split()[0], o.split()[1]) for o in SNAPSHOT if o.startswith("model=")}
    assert {(f"model={m}", f"phase={p}") for m in ("tiny", "small", "base") for p in PHASES} <= covered


def test_the_toy_experiment_composes_with_every_mix(tmp_path):
    # The toy experiment sets nothing a mix other than the sample's would refuse.
    from hydra.utils import instantiate

    for mix in ("sample", "folder"):
        cfg = compose_train(["experiment=toy", "phase=decay", f"data_mix={mix}"], output_dir=tmp_path)
        assert len(instantiate(cfg.data_mix).languages) == 27, mix
