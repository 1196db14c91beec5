"""The ``mixture.json`` schema: one home for the training run's report and the offline mixture plan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmbert.data.mix.count_meaning import CountMeaning


def mixture_report(
    meaning: CountMeaning,
    tau: float,
    weights: Mapping[str, float],
    counts: Mapping[str, int],
    budget_tokens: float | None = None,
    known: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``{"tau", "counts", "released_tau", "added", "languages": {lang: {"weight": target share, "tokens": the mix's
    token count, "budget_tokens": share x budget_tokens, "passes": budget_tokens / tokens of data}}}`` in the
    order of ``weights``.

    ``known``: the mix's counts as known without reading data (:meth:`mmbert.data.MixSpec.known_counts`), of
    which ``meaning`` tells the tokens of data. ``budget_tokens`` and ``passes`` are null where the budget or
    the data size is not known.
    """
    available = meaning.data_tokens(known)
    languages = {}
    for lang, w in weights.items():
        budget = None if budget_tokens is None else round(w * budget_tokens)
        have = None if available is None else available.get(lang)
        languages[lang] = {
            "weight": w,
            "tokens": counts[lang],
            "budget_tokens": budget,
            "passes": None if budget is None or not have else budget / have,
        }
    return {
        "tau": tau,
        "counts": meaning.counts,
        "released_tau": meaning.released_tau,
        "added": dict(meaning.added),  # data_mix.add: language -> its fixed target share
        "languages": languages,
    }
