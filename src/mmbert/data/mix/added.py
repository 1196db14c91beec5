"""Your own languages in any mix at a chosen share: ``data_mix.add`` (:class:`AddedMix`).

``+data_mix.add={kat_Geor: {path: /data/kat, share: 0.02}}`` trains ``kat_Geor`` on exactly 2% of the phase's
tokens (a target share, not re-tempered); the mix's own languages keep their relative shares and share the
other 98% (:class:`~mmbert.data.mix.count_meaning.CountMeaning`'s ``added``). An added language the mix already
has (``kat_Geor``, or ``kat`` in a hub mix) replaces it. ``path`` is one language's text, in any of:

- a FineWeb2-layout language folder: ``train/*`` (+ ``test/*``, its validation split);
- a folder of data files (``.parquet``, ``.jsonl[.gz|.zst]``, ``.txt``), validated on held-out documents;
- ``prepare``'s MDS shards of that language (``OUT/<lang>``: folders with ``index.json``), pre-tokenized with the
  mix's tokenizer.

``text_field`` and ``count_tokens`` (``estimate`` or ``exact``) work as for folder mixes; the counts (the
added text's tokens, for the plan's passes) are measured once and cached beside the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbert.data.counts import (
    ESTIMATE,
    MDS_KEY,
    SAMPLE_BYTES,
    CountCache,
    cached_counts,
    check_method,
    estimate_tokens,
    measure_tokens,
    tokenizer_fingerprint,
)
from mmbert.data.langcodes import iso639_3, normalize_language
from mmbert.data.mds import find_shards
from mmbert.data.mix.base import MixSpec, Source
from mmbert.data.mix.folder import FileSource
from mmbert.data.mix.layout import data_files
from mmbert.data.mix.mds import MdsSource
from mmbert.data.paths import resolve_path
from mmbert.data.tokenizer import load_tokenizer
from mmbert.errors import DataError

KEYS = ("path", "share", "text_field", "count_tokens")
FOLDER, FILES, MDS = "FineWeb2-layout language folder", "folder of data files", "MDS shards"


@dataclass(frozen=True)
class Addition:
    """One ``data_mix.add`` entry: what ``root`` holds (``kind``) and how it is read."""

    lang: str
    root: Path
    kind: str
    share: float
    text_field: str = "text"
    count_tokens: str = ESTIMATE

    def train_files(self) -> list[Path]:
        return data_files(self.root / "train" if self.kind == FOLDER else self.root)

    def test_files(self) -> list[Path]:
        test = self.root / "test"
        return data_files(test) if self.kind == FOLDER and test.is_dir() else []


def _language(name: Any) -> str:
    try:
        lang = normalize_language(str(name))
    except DataError as e:
        raise DataError(f"data_mix.add: {e}") from None
    if lang is None or lang == "code" or len(iso639_3(lang)) != 3:
        raise DataError(
            f"data_mix.add: {name!r} is not an ISO 639-3 language code with an optional script "
            "(e.g. kat_Geor, or kat)"
        )
    return lang


def _kind(lang: str, root: Path) -> str:
    where = f"data_mix.add.{lang}.path={root}"
    if not root.is_dir():
        raise DataError(f"{where}: no such folder")
    if find_shards(root):
        return MDS
    if (root / "train").is_dir() and data_files(root / "train"):
        return FOLDER
    if data_files(root):
        return FILES
    raise DataError(f"{where}: no usable text (no train/ folder, data files or MDS shards in it)")


def parse_additions(add: Mapping[str, Any]) -> dict[str, Addition]:
    """The ``data_mix.add`` entries, checked: one-line DataErrors name the key at fault."""
    out: dict[str, Addition] = {}
    for name, entry in add.items():
        lang = _language(name)
        if not isinstance(entry, Mapping) or "path" not in entry or "share" not in entry:
            raise DataError(f"data_mix.add.{name}: give {{path: DIR, share: S}}, got {entry!r}")
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            raise DataError(f"data_mix.add.{name}: unknown keys {unknown} (allowed: {', '.join(KEYS)})")
        if lang in out:
            raise DataError(f"data_mix.add: {name!r} names language {lang!r} twice")
        root = resolve_path(str(entry["path"]))
        method = check_method(entry.get("count_tokens", ESTIMATE), f"data_mix.add.{name}.count_tokens")
        text_field = str(entry.get("text_field", "text"))
        out[lang] = Addition(lang, root, _kind(lang, root), entry["share"], text_field, method)
    return out


def _same_language(ours: str, theirs: str) -> bool:
    """``kat_Geor`` replaces ``kat_Geor``, and ``kat`` (a hub mix's ISO code) or the reverse."""
    return ours == theirs or (("_" not in ours or "_" not in theirs) and iso639_3(ours) == iso639_3(theirs))


class AddedMix(MixSpec):
    """``base`` with ``add``'s languages at their fixed target shares (the module docstring)."""

    def __init__(self, base: MixSpec, add: Mapping[str, Any]) -> None:
        if not add:
            raise DataError("data_mix.add is empty: give {language: {path: DIR, share: S}}")
        self.base = base
        self.additions = parse_additions(add)
        shares = {lang: a.share for lang, a in self.additions.items()}
        self.meaning = dataclasses.replace(base.meaning, added=shares)
        self.replaced = [
            lang for lang in base.languages if any(_same_language(a, lang) for a in self.additions)
        ]
        self.name = f"{base.name}+{'+'.join(self.additions)}"
        self.tokenizer = base.tokenizer
        own_val = base.val_languages
        kept_val = None if own_val is None else [v for v in own_val if v not in self.replaced]
        self.val_languages = None if kept_val is None else [*kept_val, *self.additions]

    @property
    def languages(self) -> list[str]:
        return [lang for lang in self.base.languages if lang not in self.replaced] + list(self.additions)

    def _own(self, counts: Mapping[str, int]) -> dict[str, int]:
        return {lang: n for lang, n in counts.items() if lang not in self.replaced}

    def _added_counts(self) -> dict[str, int]:
        tok = load_tokenizer(self.tokenizer)
        out: dict[str, int] = {}
        for lang, a in self.additions.items():
            src = self.train_source(lang)
            if a.kind == MDS:
                counted = cached_counts(
                    CountCache(a.root),
                    MDS_KEY,
                    {lang: src},
                    lambda s: (*measure_tokens(s, tok), False),
                    "exact",
                )
            else:

                def count(s: Source, a: Addition = a) -> tuple[int, int, bool]:
                    if a.count_tokens == ESTIMATE:
                        return estimate_tokens(s, tok, SAMPLE_BYTES)  # type: ignore[arg-type]
                    return (*measure_tokens(s, tok), False)

                counted = cached_counts(
                    CountCache(a.root), tokenizer_fingerprint(tok), {lang: src}, count, a.count_tokens
                )
            out[lang] = counted[lang]
        return out

    def token_counts(self) -> dict[str, int]:
        return {**self._own(self.base.token_counts()), **self._added_counts()}

    def known_counts(self) -> dict[str, int] | None:
        own = self.base.known_counts()
        found: dict[str, int] = {}
        for lang, a in self.additions.items():
            files = {lang: [str(f) for f in self.train_source(lang).files()]}
            by_key = CountCache(a.root).find(files)
            if len(by_key) != 1:  # not counted yet, or counted with several tokenizers
                return None
            found.update(next(iter(by_key.values())))
        return None if own is None else {**self._own(own), **found}

    def mean_doc_tokens(self) -> dict[str, float]:
        means = {lang: m for lang, m in self.base.mean_doc_tokens().items() if lang not in self.replaced}
        key = None
        for lang, a in self.additions.items():
            if a.kind != MDS and key is None:
                key = tokenizer_fingerprint(load_tokenizer(self.tokenizer))
            files = [str(f) for f in self.train_source(lang).files()]
            mean = CountCache(a.root).mean_doc_tokens(MDS_KEY if a.kind == MDS else key, lang, files)
            if mean is not None:
                means[lang] = mean
        return means

    def train_source(self, lang: str, holdout: int = 0) -> Source:
        a = self.additions.get(lang)
        if a is None:
            return self.base.train_source(lang, holdout)
        if a.kind == MDS:
            tok = load_tokenizer(self.tokenizer)
            src: Source = MdsSource(lang, find_shards(a.root), tok.bos_token_id, tok.eos_token_id)
            src.holdout = holdout
            return src
        return FileSource(lang, a.train_files(), a.text_field, holdout)

    def val_source(self, lang: str) -> Source | None:
        a = self.additions.get(lang)
        if a is None:
            return self.base.val_source(lang)
        files = a.test_files()
        return FileSource(lang, files, a.text_field) if files else None
