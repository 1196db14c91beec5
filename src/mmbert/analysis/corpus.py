"""Choosing the languages of an analysis: a sample that covers every script, and the languages of a mixture
found in a corpus (the texts themselves are read by :mod:`mmbert.data.eval_texts`)."""

from __future__ import annotations

from collections.abc import Iterable

from mmbert.data.langcodes import iso639_3, language_script


def one_per_script(languages: Iterable[str], per_script: int = 1) -> list[str]:
    """The first ``per_script`` languages (sorted) of each script: a small sample that still covers every
    script of a corpus."""
    taken: dict[str, int] = {}
    picked = []
    for lang in sorted(languages):
        script = language_script(lang)
        if taken.get(script, 0) < per_script:
            taken[script] = taken.get(script, 0) + 1
            picked.append(lang)
    return picked


def matching_languages(available: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The ``available`` languages named in ``wanted`` either exactly (``ell_Grek``) or by ISO 639-3 code
    alone (``ell``, as mixtures built from hub datasets name them), in the order of ``available``."""
    wanted = set(wanted)
    return [lang for lang in available if lang in wanted or iso639_3(lang) in wanted]
