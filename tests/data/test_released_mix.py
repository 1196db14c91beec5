"""What a mix's token counts are: released (already sampled) shares vs available tokens, and re-tempering."""

from __future__ import annotations

import math
import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import REPO

from mmbert.data import (
    HubMix,
    MdsMix,
    MixSpec,
    MLMDataModule,
    SampleMix,
    released_weights,
    temperature_weights,
)
from mmbert.errors import DataError

MDS_FIXTURE = REPO / "tests" / "fixtures" / "mds"
# mix -> (tau it was sampled with, English %, code %) as RECIPE.md quotes the release
RELEASE = {
    "pretrain": (0.7, 34.5, 5.1),
    "midtrain": (0.5, 12.1, 3.3),
    "decay-eng": (0.3, 17.9, 3.1),
    "decay-cont": (0.3, 13.2, 3.2),
    "decay-all": (0.3, 10.2, 5.5),
}


def shares(mix: MixSpec, tau: float) -> dict[str, float]:
    """The mix's target shares at ``tau``, of all its counts."""
    return mix.meaning.weights(mix.token_counts(), tau)


@pytest.fixture(scope="module")
def released() -> dict[str, HubMix]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf" / "data_mix"), version_base="1.3"):
        return {name: instantiate(compose(config_name=name)) for name in RELEASE}


def test_released_mixes_say_what_their_counts_are(released: dict[str, HubMix]) -> None:
    for name, mix in released.items():
        assert (mix.meaning.counts, mix.meaning.released_tau, mix.meaning.fixed_shares) == (
            "released",
            RELEASE[name][0],
            ("eng", "code"),
        )


def test_released_mix_at_its_own_tau_is_exactly_the_release(released: dict[str, HubMix]) -> None:
    for name, mix in released.items():
        tau, eng, code = RELEASE[name]
        counts = mix.token_counts()
        total = sum(counts.values())
        weights = shares(mix, tau)
        assert weights == {lang: n / total for lang, n in counts.items()}  # exact, not approx
        assert 100 * weights["eng"] == pytest.approx(eng, abs=0.06)
        assert 100 * weights["code"] == pytest.approx(code, abs=0.06)


@pytest.mark.parametrize(("name", "tau"), [("pretrain", 0.5), ("midtrain", 0.3), ("decay-all", 0.7)])
def test_other_tau_retempers_fineweb2_and_keeps_eng_and_code(
    released: dict[str, HubMix], name: str, tau: float
) -> None:
    mix = released[name]
    counts = mix.token_counts()
    release = shares(mix, mix.meaning.released_tau)
    weights = shares(mix, tau)
    assert math.fsum(weights.values()) == pytest.approx(1.0, abs=1e-12)
    assert weights["eng"] == release["eng"] and weights["code"] == release["code"]
    # the FineWeb2 group keeps its mass, and shares within it go as count^(tau / released_tau)
    group = [lang for lang in counts if lang not in ("eng", "code")]
    assert math.fsum(weights[k] for k in group) == pytest.approx(
        math.fsum(release[k] for k in group), rel=1e-12
    )
    ref = group[0]
    for lang in group[1:]:
        expected = (counts[lang] / counts[ref]) ** (tau / mix.meaning.released_tau)
        assert weights[lang] / weights[ref] == pytest.approx(expected, rel=1e-9)
    # flatter at a lower tau, sharper at a higher one: the smallest language gains or loses
    smallest = min(group, key=counts.__getitem__)
    assert (weights[smallest] > release[smallest]) == (tau < mix.meaning.released_tau)


def test_retempering_is_continuous_at_the_released_tau(released: dict[str, HubMix]) -> None:
    mix = released["decay-all"]
    near = shares(mix, mix.meaning.released_tau * (1 + 1e-12))
    assert near == pytest.approx(shares(mix, mix.meaning.released_tau), rel=1e-9)


def test_released_weights_small_example_and_release_scale() -> None:
    # a, b: shares 0.4, 0.1 released at tau 0.5 -> implied n 0.16, 0.01 -> at tau 0.25: 2:1 within their 0.5
    w = released_weights({"eng": 50, "a": 40, "b": 10}, 0.25, 0.5, fixed=["eng"])
    assert w == pytest.approx({"eng": 0.5, "a": 1 / 3, "b": 1 / 6}, rel=1e-12)
    # 10^12 against 1 token at an exponent of 1 / 0.3: log space, no overflow or underflow to nan
    big = released_weights({"x": 10**12, "y": 1, "z": 10**6}, 1.0, 0.3)
    assert all(math.isfinite(v) for v in big.values()) and math.fsum(big.values()) == pytest.approx(1.0)
    assert big["z"] / big["y"] == pytest.approx(1e6 ** (1 / 0.3), rel=1e-9)
    with pytest.raises(DataError, match="tau must be in"):
        released_weights({"x": 1}, 0.5, 1.5)


def test_available_counts_still_get_the_phase_tau() -> None:
    sample = SampleMix(subset="pretrain")
    assert sample.meaning.counts == "available"
    counts = sample.token_counts()
    assert shares(sample, 0.7) == temperature_weights(counts, 0.7)
    given = HubMix(name="mine", token_counts={"fao": 100, "isl": 400})
    assert shares(given, 0.5) == pytest.approx({"fao": 1 / 3, "isl": 2 / 3}, rel=1e-12)
    assert given.meaning.data_tokens(given.known_counts()) == {"fao": 100, "isl": 400}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": "shares"}, "counts must be"),
        ({"counts": "released", "released_tau": 1.5}, "released_tau: tau must be in"),
        ({"counts": "released", "released_tau": 0.3, "fixed_shares": ["xyz"]}, "fixed_shares.*xyz"),
        ({"released_tau": 0.3}, "need counts: released"),
    ],
)
def test_bad_count_settings_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        HubMix(name="m", token_counts={"eng": 5, "fao": 5}, **kwargs)


def test_mds_released_shards_are_read_at_their_sizes() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf" / "data_mix"), version_base="1.3"):
        cfg = compose(config_name="mds", overrides=[f"path={MDS_FIXTURE}"])
    mix = instantiate(cfg)
    assert (mix.meaning.counts, mix.meaning.released_tau) == ("released", None)
    counts = mix.known_counts()  # the fixture's committed cache: no tokenizer, no reading
    assert counts == {"eng_Latn": 1084, "fao_Latn": 1682}
    total = sum(counts.values())
    for tau in (0.3, 0.7):  # released_tau null: the shards' own shares whatever the tau
        assert shares(mix, tau) == {k: n / total for k, n in counts.items()}
    assert mix.meaning.data_tokens(mix.known_counts()) == counts  # the shards are the data: passes are known
    # pinned released_tau: another tau re-tempers
    pinned = MdsMix(str(MDS_FIXTURE), tokenizer="data/tokenizer", counts="released", released_tau=0.3)
    w = shares(pinned, 0.5)
    assert w["eng_Latn"] / w["fao_Latn"] == pytest.approx((1084 / 1682) ** (0.5 / 0.3), rel=1e-12)
    # the class default stays available tokens (shards written from a corpus)
    plain = MdsMix(str(MDS_FIXTURE), tokenizer="data/tokenizer")
    assert shares(plain, 0.5) == temperature_weights(counts, 0.5)


def test_datamodule_trains_on_the_mix_target_weights() -> None:
    mix = MdsMix(str(MDS_FIXTURE), tokenizer="data/tokenizer", counts="released")
    dm = MLMDataModule(mix, seq_len=64, rows_per_device=2, tau=0.5, mask_ratio=0.3, val_docs_per_lang=0)
    dm.setup("fit")
    assert dm.weights == {"eng_Latn": 1084 / 2766, "fao_Latn": 1682 / 2766}
    assert dm.token_counts == {"eng_Latn": 1084, "fao_Latn": 1682}
    report = dm.mixture_report()
    assert (report["tau"], report["counts"], report["released_tau"]) == (0.5, "released", None)
    assert set(report["languages"]["eng_Latn"]) == {
        "weight",
        "tokens",
        "budget_tokens",
        "passes",
        "realised_tokens",
    }
