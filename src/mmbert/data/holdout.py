"""The sources of a run: each training language's source, its validation documents, and the languages left out.

A language with its own validation split validates on its first documents. Without one, the first
``val_docs_per_lang`` raw records of its file 0 are held out of training (the source's ``holdout``), or fewer:
when they hold the only usable documents, the last of them (and the records after it) stays in training. A
language without any usable training document is excluded (the other weights renormalise) or, with
``strict``, refused. Languages are inspected in threads: streamed hub sources one by one would take minutes
for Decay-All's 1833.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from mmbert.data.mix.base import MixSpec, Source
from mmbert.errors import DataError

SCAN_THREADS = 16  # languages inspected at once

log = logging.getLogger(__name__)


@dataclass
class _LanguagePlan:
    """What inspecting one training language found."""

    holdout: int  # raw records at the start of file 0 held out for validation
    val_docs: list[Any]
    trains: bool  # training keeps at least one usable document
    note: str = ""  # why fewer records are held out than asked, or that there is no usable document


@dataclass
class SourcePlan:
    languages: list[str]  # training languages, in the mix's order, without the excluded ones
    excluded: dict[str, str]  # language -> why it has no usable training document
    sources: list[Source]  # one per training language, with its held-out records
    val_docs: dict[str, list[Any]]  # validation documents of the languages that validate


def val_source(mix: MixSpec, lang: str) -> Source | None:
    try:
        return mix.val_source(lang)
    except KeyError:  # a language the mix does not know has no split either
        return None


def _no_documents(source: Source) -> str:
    if source.absent:
        return source.absent
    files = list(source.files())
    where = ", ".join(files[:3]) + (f" and {len(files) - 3} more files" if len(files) > 3 else "")
    return f"no usable documents in {where or 'no files'}"


def _plan_language(mix: MixSpec, lang: str, n: int) -> _LanguagePlan:
    """Validation documents of a training language (``n``, 0: none) and whether training keeps a document."""
    split = val_source(mix, lang) if n else None
    source = mix.train_source(lang)
    head, more = source.scan_head(0 if split else n)
    if split is not None:
        return _LanguagePlan(0, split.first_docs(n), more, "" if more else _no_documents(source))
    if more:
        return _LanguagePlan(n, [doc for _, doc in head], True)
    if not head:
        return _LanguagePlan(0, [], False, _no_documents(source))
    note = (
        f"all its {len(head)} usable documents are among the {n} records to hold out for validation: "
        f"it validates on {len(head) - 1} and trains on the last one"
    )
    return _LanguagePlan(head[-1][0], [doc for _, doc in head[:-1]], True, note)


def _excluded(mix: MixSpec, languages: Sequence[str], empty: dict[str, str], strict: bool) -> None:
    """Refuses or warns about the languages without a usable training document."""
    if not empty:
        return
    reasons = "; ".join(f"{lang}: {why}" for lang, why in empty.items())
    if strict:
        raise DataError(f"languages without usable training documents (strict_languages): {reasons}")
    if len(empty) == len(languages):
        raise DataError(f"mix {mix.name!r}: no language has a usable training document ({reasons})")
    for lang, why in empty.items():
        log.warning("language %r excluded from training (other weights renormalised): %s", lang, why)


def plan_sources(
    mix: MixSpec, languages: Sequence[str], requested_val: Sequence[str], n: int, strict: bool
) -> SourcePlan:
    """Training sources of ``languages`` (``n`` validation documents each for ``requested_val``)."""
    wanted = set(requested_val) if n else set()
    extra = {lang: val_source(mix, lang) for lang in requested_val if lang not in languages}
    for lang, src in extra.items():  # a validation-only language needs its own split
        if src is None:
            raise DataError(f"val_languages: {lang!r} is not a training language of mix {mix.name!r}")

    def inspect(lang: str) -> _LanguagePlan:
        return _plan_language(mix, lang, n if lang in wanted else 0)

    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        found = pool.map(inspect, languages)
        bar = tqdm(found, total=len(languages), desc="checking sources", leave=False)
        plans = dict(zip(languages, bar, strict=True))
        docs = pool.map(lambda src: src.first_docs(n), extra.values())
        extra_docs = dict(zip(extra, docs, strict=True))
    empty = {lang: plan.note for lang, plan in plans.items() if not plan.trains}
    _excluded(mix, languages, empty, strict)
    training = [lang for lang in languages if lang not in empty]
    for lang in training:
        if plans[lang].note:
            log.warning("language %r: %s", lang, plans[lang].note)
    # An excluded language with a validation split of its own is still validated.
    val_docs = {
        lang: plans[lang].val_docs if lang in plans else extra_docs[lang]
        for lang in requested_val
        if lang in wanted
    }
    return SourcePlan(
        languages=training,
        excluded=dict(empty),
        sources=[mix.train_source(lang, plans[lang].holdout) for lang in training],
        val_docs={k: v for k, v in val_docs.items() if v},
    )
