"""What a mix's token counts mean, on its own: target shares at a tau, the data behind the counts, checks."""

from __future__ import annotations

import dataclasses
import pickle
import re

import pytest

from mmbert.data import CountMeaning
from mmbert.errors import DataError

RELEASE = {"eng": 50, "a": 40, "b": 10}  # a released mixture: shares 0.5, 0.4, 0.1


def test_available_counts_are_tempered_at_the_phase_tau() -> None:
    meaning = CountMeaning()
    assert meaning.counts == "available" and meaning.sizes_data
    # q ~ n^tau: 100^0.5 : 400^0.5 = 10 : 20, and 1^(1/3) : 8^(1/3) : 27^(1/3) = 1 : 2 : 3
    assert meaning.weights({"a": 100, "b": 400}, 0.5) == pytest.approx({"a": 1 / 3, "b": 2 / 3}, rel=1e-12)
    assert meaning.weights({"a": 1, "b": 8, "c": 27}, 1 / 3) == pytest.approx(
        {"a": 1 / 6, "b": 2 / 6, "c": 3 / 6}, rel=1e-12
    )
    assert meaning.weights({"a": 100, "b": 400}, 1.0) == pytest.approx({"a": 0.2, "b": 0.8}, rel=1e-12)
    assert list(meaning.weights({"b": 1, "a": 2}, 0.7)) == ["b", "a"]  # in the order of the counts


def test_released_counts_at_their_own_tau_are_the_release_exactly() -> None:
    release = {lang: n / 100 for lang, n in RELEASE.items()}
    assert CountMeaning("released", 0.5, ("eng",)).weights(RELEASE, 0.5) == release  # exact, not approx
    unpinned = CountMeaning("released")  # released_tau null: read at their sizes whatever the tau
    for tau in (0.3, 0.5, 1.0):
        assert unpinned.weights(RELEASE, tau) == release


def test_released_counts_are_retempered_keeping_fixed_shares() -> None:
    meaning = CountMeaning("released", 0.5, ("eng",))
    # a, b: shares 0.4, 0.1 sampled at 0.5 -> at tau 0.25 they go as share^(0.25 / 0.5): 0.4^0.5 : 0.1^0.5 = 2 : 1
    # within their 0.5; eng keeps its 0.5
    assert meaning.weights(RELEASE, 0.25) == pytest.approx({"eng": 0.5, "a": 1 / 3, "b": 1 / 6}, rel=1e-12)
    # at tau 1.0 the group goes as share^2: 0.16 : 0.01 of its 0.5
    assert meaning.weights(RELEASE, 1.0) == pytest.approx(
        {"eng": 0.5, "a": 0.5 * 16 / 17, "b": 0.5 / 17}, rel=1e-12
    )
    # without fixed shares every entry is re-tempered: 0.5^2 : 0.4^2 : 0.1^2 = 25 : 16 : 1
    assert CountMeaning("released", 0.5).weights(RELEASE, 1.0) == pytest.approx(
        {"eng": 25 / 42, "a": 16 / 42, "b": 1 / 42}, rel=1e-12
    )


def test_data_behind_the_counts() -> None:
    counts = {"eng": 21, "fao": 5}
    assert CountMeaning().data_tokens(counts) == counts
    assert CountMeaning().data_tokens(None) is None
    released = CountMeaning("released", 0.3)
    assert not released.sizes_data and released.data_tokens(counts) is None  # shares, not data sizes
    shards = CountMeaning("released", of_data=True)  # measured on the data itself
    assert shards.sizes_data and shards.data_tokens(counts) == counts
    upweighted = CountMeaning(upweight={"eng": 3.0})
    assert upweighted.upweighted({"eng": 7, "fao": 5}) == counts
    assert upweighted.data_tokens(counts) == {"eng": 7, "fao": 5}
    assert upweighted.data_tokens({"eng": 10**12 + 1}) == {"eng": round((10**12 + 1) / 3)}


def test_a_meaning_is_immutable() -> None:
    given = {"eng": 3.0}
    meaning = CountMeaning("released", 0.5, ["eng"], upweight=given)  # type: ignore[arg-type]
    assert meaning.fixed_shares == ("eng",)
    given["eng"] = 1.0  # the meaning keeps its own copy
    assert meaning.upweight == {"eng": 3.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        meaning.counts = "available"  # type: ignore[misc]
    with pytest.raises(TypeError):
        meaning.upweight["eng"] = 2.0  # type: ignore[index]
    assert meaning == CountMeaning("released", 0.5, ("eng",), upweight={"eng": 3.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"counts": "shares"}, "mix 'm': counts must be 'available' or 'released', got 'shares'"),
        ({"released_tau": 0.3}, "mix 'm': released_tau and fixed_shares need counts: released"),
        ({"fixed_shares": ("eng",)}, "mix 'm': released_tau and fixed_shares need counts: released"),
        (
            {"counts": "released", "released_tau": 1.5},
            "mix 'm': released_tau: tau must be in (0, 1], got 1.5",
        ),
        ({"counts": "released", "released_tau": 0}, "mix 'm': released_tau: tau must be in (0, 1], got 0"),
        (
            {"counts": "released", "fixed_shares": ("eng", "xyz", "abc")},
            "mix 'm': fixed_shares has entries not in the mix: ['abc', 'xyz']",
        ),
    ],
)
def test_each_bad_setting_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        CountMeaning(**kwargs, where="mix 'm'", entries=("eng", "fao"))


def test_without_entries_fixed_shares_are_not_checked_against_a_mix() -> None:
    assert CountMeaning("released", fixed_shares=("xyz",)).fixed_shares == ("xyz",)
    with pytest.raises(DataError, match=r"^data_mix: counts must be"):
        CountMeaning("shares")


def test_a_meaning_pickles_for_spawned_processes() -> None:
    meaning = CountMeaning(upweight={"eng": 3.0})
    again = pickle.loads(pickle.dumps(meaning))
    assert again == meaning and again.upweighted({"eng": 2}) == {"eng": 6}
    with pytest.raises(TypeError):
        again.upweight["eng"] = 2.0  # type: ignore[index]
