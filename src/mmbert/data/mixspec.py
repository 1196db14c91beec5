"""Mix specs: which languages a phase trains on, where their documents are, and how many tokens each has.

The ``conf/data_mix/*.yaml`` files instantiate one of these (``_target_`` + arguments):

- :class:`SampleMix`: the embedded sample corpus ``data/sample`` and one of its subsets;
- :class:`FolderMix`: any local FineWeb2-layout folder (token counts estimated from a sample or counted, once, and cached);
- :class:`HubMix`: the released mmBERT mixtures over hub datasets (token counts from the release);
- :class:`MdsMix`: pre-tokenized MDS shards.

What the token counts are, and so how a phase's ``tau`` turns them into target shares
(:meth:`MixSpec.target_weights`), is the mix's ``counts`` setting:

- ``counts: available`` (folder and sample mixes, user-given counts): the tokens each language *has*;
  the phase samples ``q_i = n_i^tau / sum_j n_j^tau``.
- ``counts: released`` (the released mixtures, the released MDS shards): the tokens of each language in
  already temperature-sampled data, i.e. the target shares themselves (``count_i / total``), which tau must
  not flatten a second time. ``released_tau`` is the tau the release was sampled with; a phase run at another
  tau (an ablation) re-tempers the entries not in ``fixed_shares`` from their implied available tokens
  ``n_i ~ share_i^(1 / released_tau)``, keeping their total share, while the ``fixed_shares`` entries
  (sources outside the temperature sampling, e.g. English and code) keep theirs
  (:func:`mmbert.data.sampling.released_weights`). ``released_tau: null`` takes the phase's tau: the counts are
  then read at their sizes whatever the tau.

Relative paths are resolved against the repository root (:mod:`mmbert.data.paths`).
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmbert.data.counts import (
    ESTIMATE,
    SAMPLE_BYTES,
    CountCache,
    cached_counts,
    check_method,
    estimate_tokens,
    measure_tokens,
    tokenizer_fingerprint,
)
from mmbert.data.langcodes import normalize_language
from mmbert.data.mds import MdsShard, find_shards
from mmbert.data.paths import resolve_path
from mmbert.data.readers import SUFFIXES, file_format
from mmbert.data.sampling import check_tau, released_weights, temperature_weights
from mmbert.data.sources import FileSource, HubSource, MdsSource, Source, hub_configs
from mmbert.data.tokenizer import load_tokenizer
from mmbert.errors import DataError

log = logging.getLogger(__name__)

AVAILABLE, RELEASED = "available", "released"


class MixSpec(ABC):
    """Data mixture: ``languages`` in training order, ``token_counts`` per language and what they are
    (``counts``, see the module docstring), which :meth:`target_weights` turns into the phase's shares."""

    name: str
    tokenizer: str
    val_languages: list[str] | None = None
    counts: str = AVAILABLE
    released_tau: float | None = None
    fixed_shares: tuple[str, ...] = ()

    @property
    @abstractmethod
    def languages(self) -> list[str]: ...

    @abstractmethod
    def token_counts(self) -> dict[str, int]:
        """Tokens per language (given by the mix, or measured with the mix's tokenizer and cached)."""

    def known_counts(self) -> dict[str, int] | None:
        """``token_counts()`` where it needs no reading of data (given or cached), else None."""
        return self.token_counts()

    def available_tokens(self) -> dict[str, int] | None:
        """Tokens of data behind each language (passes over it), without reading data; None if unknown."""
        return None if self.counts == RELEASED else self.known_counts()

    def target_weights(self, tau: float, counts: Mapping[str, int] | None = None) -> dict[str, float]:
        """Target token share of each language in a phase sampled at ``tau``; ``counts``: this mix's
        ``token_counts()`` when already read (in the order of the result)."""
        counts = self.token_counts() if counts is None else counts
        if self.counts == AVAILABLE:
            return temperature_weights(counts, tau)
        released = tau if self.released_tau is None else self.released_tau
        return released_weights(counts, tau, released, self.fixed_shares)

    def _set_counts_meaning(
        self,
        counts: str,
        released_tau: float | None,
        fixed_shares: Iterable[str] | str | None,
        names: Iterable[str],
    ) -> None:
        """Checks and sets ``counts``, ``released_tau`` and ``fixed_shares`` (entries among ``names``)."""
        where = f"mix {self.name!r}"
        if counts not in (AVAILABLE, RELEASED):
            raise DataError(f"{where}: counts must be {AVAILABLE!r} or {RELEASED!r}, got {counts!r}")
        fixed = _as_list(fixed_shares) or []
        if counts == AVAILABLE and (released_tau is not None or fixed):
            raise DataError(f"{where}: released_tau and fixed_shares need counts: {RELEASED}")
        if released_tau is not None:
            try:
                check_tau(released_tau)
            except DataError as e:
                raise DataError(f"{where}: released_tau: {e}") from e
        unknown = sorted(set(fixed) - set(names))
        if unknown:
            raise DataError(f"{where}: fixed_shares has entries not in the mix: {unknown}")
        self.counts, self.released_tau, self.fixed_shares = counts, released_tau, tuple(fixed)

    def mean_doc_tokens(self) -> dict[str, float]:
        """Measured tokens per document of the languages whose counts are cached (the sampler's length
        prior, so that its first draws already follow the shares); none by default."""
        return {}

    @abstractmethod
    def train_source(self, lang: str, holdout: int = 0) -> Source: ...

    @abstractmethod
    def val_source(self, lang: str) -> Source | None:
        """The language's own validation split, or None (validation then holds out training records)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, languages={len(self.languages)})"


def mixture_report(
    mix: MixSpec,
    tau: float,
    weights: Mapping[str, float],
    counts: Mapping[str, int],
    budget_tokens: float | None = None,
    available: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``mixture.json`` schema, one home for the training run's report and ``python -m mmbert.data.plan``.

    ``{"tau", "counts", "released_tau", "languages": {lang: {"weight": target share, "tokens": the mix's
    token count, "budget_tokens": share x budget_tokens, "passes": budget_tokens / available tokens}}}`` in the
    order of ``weights``; ``budget_tokens`` and ``passes`` are null where the budget or the data size is not
    known.
    """
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
    return {"tau": tau, "counts": mix.counts, "released_tau": mix.released_tau, "languages": languages}


def _as_list(value: Iterable[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _check_counts(counts: Mapping[str, Any], where: str) -> dict[str, int]:
    out = {}
    for lang, n in counts.items():
        try:
            out[str(lang)] = int(n)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: token count of {lang!r} is not an integer: {n!r}") from e
        if out[str(lang)] <= 0:
            raise DataError(f"{where}: token count of {lang!r} must be > 0, got {n!r}")
    return out


def data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and file_format(p) is not None)


def discover_languages(root: Path) -> dict[str, Path]:
    """``{language: folder}`` of the ``{iso639_3}_{Script}/train/`` folders in ``root`` or ``root/data``."""
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    base = root / "data" if (root / "data").is_dir() else root
    found: dict[str, Path] = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir() and (p / "train").is_dir()):
        lang = normalize_language(d.name)
        if lang is None:
            continue
        if lang in found:
            raise DataError(f"{base}: folders {found[lang].name!r} and {d.name!r} are both language {lang!r}")
        if not data_files(d / "train"):
            raise DataError(f"{d / 'train'}: language folder without data files ({', '.join(SUFFIXES)})")
        found[lang] = d
    if not found:
        raise DataError(f"{root}: no language folders ({{iso639_3}}_{{Script}}/train/*) found")
    return found


class FolderMix(MixSpec):
    """A local FineWeb2-layout folder: ``{lang}_{Script}/train/*`` (+ ``test/*``), also under ``data/``.

    ``count_tokens``: ``estimate`` (tokens per byte of a ``sample_bytes`` sample of each language, scaled by
    its size) or ``exact`` (tokenize everything); see :mod:`mmbert.data.counts`.
    """

    def __init__(
        self,
        path: str,
        tokenizer: str = "data/tokenizer",
        languages: Sequence[str] | str | None = None,
        token_counts: Mapping[str, int] | None = None,
        text_field: str = "text",
        val_languages: Sequence[str] | str | None = None,
        name: str | None = None,
        count_tokens: str = ESTIMATE,
        sample_bytes: int = SAMPLE_BYTES,
    ) -> None:
        if path is None or str(path) in ("", "???"):
            raise DataError("data_mix.path is not set (data_mix=folder data_mix.path=DIR)")
        self.root = resolve_path(path)
        self.name = name or self.root.name
        self.tokenizer = tokenizer
        self.text_field = text_field
        self.count_method = check_method(count_tokens, "data_mix.count_tokens")
        if not isinstance(sample_bytes, int) or sample_bytes < 1:
            raise DataError(f"data_mix.sample_bytes must be an integer >= 1, got {sample_bytes!r}")
        self.sample_bytes = sample_bytes
        self.folders = discover_languages(self.root)
        wanted = _as_list(languages)
        if wanted is None:
            self._languages = list(self.folders)
        else:
            self._languages = [self._known(lang, "languages") for lang in wanted]
        self.val_languages = [self._known(v, "val_languages") for v in _as_list(val_languages) or []] or None
        self._given = _check_counts(token_counts, f"mix {self.name!r}") if token_counts else None
        if self._given is not None:
            missing = set(self._languages) - set(self._given)
            if missing:
                raise DataError(f"mix {self.name!r}: token_counts lack languages {sorted(missing)}")

    def _known(self, lang: str, key: str) -> str:
        norm = normalize_language(lang)
        if norm not in self.folders:
            raise DataError(
                f"{key}: unknown language {lang!r} in {self.root} (available: {sorted(self.folders)})"
            )
        return norm

    @property
    def languages(self) -> list[str]:
        return list(self._languages)

    def train_files(self, lang: str) -> list[Path]:
        return data_files(self.folders[lang] / "train")

    def train_source(self, lang: str, holdout: int = 0) -> Source:
        return FileSource(lang, self.train_files(lang), self.text_field, holdout)

    def val_source(self, lang: str) -> Source | None:
        test = self.folders[lang] / "test"
        files = data_files(test) if test.is_dir() else []
        return FileSource(lang, files, self.text_field) if files else None

    def _train_files(self) -> dict[str, list[str]]:
        return {lang: [str(f) for f in self.train_files(lang)] for lang in self._languages}

    def cached_counts(self) -> dict[str, int] | None:
        """The cached counts of these files, found without loading the tokenizer; None unless exactly one
        tokenizer's counts cover every language (several: which one is the mix's needs the tokenizer)."""
        found = list(CountCache(self.root).find(self._train_files()).values())
        return found[0] if len(found) == 1 else None

    def measured_counts(self) -> dict[str, int]:
        tok = load_tokenizer(self.tokenizer)

        def count(src: Source) -> tuple[int, int, bool]:
            if self.count_method == ESTIMATE:
                return estimate_tokens(src, tok, self.sample_bytes)  # type: ignore[arg-type]
            return (*measure_tokens(src, tok), False)

        sources = {lang: self.train_source(lang) for lang in self._languages}
        return cached_counts(
            CountCache(self.root), tokenizer_fingerprint(tok), sources, count, self.count_method
        )

    def token_counts(self) -> dict[str, int]:
        if self._given is not None:
            return {lang: self._given[lang] for lang in self._languages}
        return self.measured_counts()

    def known_counts(self) -> dict[str, int] | None:
        if self._given is not None:
            return {lang: self._given[lang] for lang in self._languages}
        return self.cached_counts()

    def mean_doc_tokens(self) -> dict[str, float]:
        cache, tok_key = CountCache(self.root), tokenizer_fingerprint(load_tokenizer(self.tokenizer))
        means = {lang: cache.mean_doc_tokens(tok_key, lang, f) for lang, f in self._train_files().items()}
        return {lang: m for lang, m in means.items() if m is not None}


class SampleMix(FolderMix):
    """The embedded sample corpus; ``subset`` picks the languages of one phase (see ``languages.json``).

    Subsets mirror the real phases: ``pretrain`` (60 languages -> 9), ``midtrain`` and ``decay-cont``
    (110 -> 16), ``decay-all`` (all; also named ``decay``, the phase name), and ``decay-eng`` (``midtrain``
    with English tokens upweighted).
    """

    def __init__(
        self,
        path: str = "data/sample",
        subset: str = "decay-all",
        tokenizer: str = "data/tokenizer",
        val_languages: Sequence[str] | str | None = None,
    ) -> None:
        root = resolve_path(path)
        meta_path = root / "languages.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{meta_path}: cannot read the sample's language subsets ({e})") from e
        subsets = meta["subsets"]
        if subset not in subsets:
            raise DataError(f"data_mix.subset must be one of {sorted(subsets)}, got {subset!r}")
        self.subset = subset
        self.upweight: dict[str, float] = dict(subsets[subset].get("upweight", {}))
        super().__init__(
            path,
            tokenizer,
            subsets[subset]["languages"],
            val_languages=val_languages,
            name=f"sample-{subset}",
        )

    def _upweighted(self, counts: Mapping[str, int]) -> dict[str, int]:
        return {lang: round(n * self.upweight.get(lang, 1.0)) for lang, n in counts.items()}

    def token_counts(self) -> dict[str, int]:
        return self._upweighted(super().token_counts())

    def known_counts(self) -> dict[str, int] | None:
        counts = super().known_counts()
        return None if counts is None else self._upweighted(counts)

    def available_tokens(self) -> dict[str, int] | None:
        return super().known_counts()  # the files' own tokens, before the subset's upweighting


class HubMix(MixSpec):
    """A released mmBERT mixture: languages and their token counts, read from hub datasets.

    A language is a FineWeb2 config (``rus_Cyrl``) or an ISO 639-3 code (``rus``: every ``rus_*`` config of
    ``repo``, found with ``datasets.get_dataset_config_names``). ``sources`` overrides where a language comes
    from (``{lang: {repo, config, split, val_split, text_field}}``), e.g. English and code, which FineWeb2 has
    not. Languages without a validation split hold out their first training records for validation.

    ``counts``/``released_tau``/``fixed_shares``: what ``token_counts`` are (module docstring); the generated
    released mixtures say ``released``, user-given counts default to ``available``.
    """

    def __init__(
        self,
        name: str,
        token_counts: Mapping[str, int],
        tokenizer: str = "jhu-clsp/mmBERT-small",
        repo: str = "HuggingFaceFW/fineweb-2",
        split: str = "train",
        val_split: str | None = "test",
        text_field: str = "text",
        sources: Mapping[str, Mapping[str, Any]] | None = None,
        val_languages: Sequence[str] | str | None = None,
        revision: str | None = None,
        counts: str = AVAILABLE,
        released_tau: float | None = None,
        fixed_shares: Sequence[str] | str | None = None,
    ) -> None:
        self.name, self.tokenizer, self.repo, self.revision = name, tokenizer, repo, revision
        self.split, self.val_split, self.text_field = split, val_split, text_field
        self._counts = _check_counts(token_counts, f"mix {name!r}")
        if not self._counts:
            raise DataError(f"mix {name!r} has no languages")
        for lang in self._counts:
            if normalize_language(lang) != lang:
                raise DataError(
                    f"mix {name!r}: {lang!r} is not an ISO 639-3 code or {{iso639_3}}_{{Script}} name"
                )
        self.overrides = {str(k): dict(v) for k, v in (sources or {}).items()}
        unknown = set(self.overrides) - set(self._counts)
        if unknown:
            raise DataError(f"mix {name!r}: sources given for languages not in the mix: {sorted(unknown)}")
        self.val_languages = _as_list(val_languages)
        for v in self.val_languages or []:
            if v not in self._counts:
                raise DataError(f"mix {name!r}: val_languages has {v!r}, which is not in the mix")
        self._set_counts_meaning(counts, released_tau, fixed_shares, self._counts)

    @property
    def languages(self) -> list[str]:
        return list(self._counts)

    def token_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def configs(self, lang: str) -> list[str]:
        """The configs of a language: itself if it names one, else all its ``{iso}_{Script}`` configs.

        FineWeb2's ``{iso}_{Script}_removed`` configs hold filtered-out documents and are never matched.
        """
        available = hub_configs(self.repo, self.revision)
        if "_" in lang:
            found = [lang] if lang in available else []
        else:
            found = [c for c in available if re.fullmatch(rf"{re.escape(lang)}_[A-Z][a-z]{{3}}", c)]
        if not found:
            raise DataError(
                f"mix {self.name!r}: language {lang!r} has no config in hub dataset {self.repo!r}"
            )
        return found

    def _source(self, lang: str, split: str, holdout: int) -> HubSource:
        o = self.overrides.get(lang)
        if o is not None:
            return HubSource(
                lang,
                o["repo"],
                [o.get("config")],
                split,
                o.get("text_field", "text"),
                holdout,
                o.get("revision"),
            )
        return HubSource(lang, self.repo, self.configs(lang), split, self.text_field, holdout, self.revision)

    def train_source(self, lang: str, holdout: int = 0) -> Source:
        o = self.overrides.get(lang, {})
        return self._source(lang, o.get("split", self.split), holdout)

    def val_source(self, lang: str) -> Source | None:
        split = self.overrides[lang].get("val_split") if lang in self.overrides else self.val_split
        if split is None:
            return None
        src = self._source(lang, split, 0)
        try:
            src.files()
        except DataError as e:
            log.warning("%s; validating %s on held-out training documents", e, lang)
            return None
        return src


class MdsMix(MixSpec):
    """Pre-tokenized MDS shards: each top-level subfolder of ``path`` (or of ``path/train``) is one source.

    Source names are the folder names (normalised when they are language codes). Validation reads
    ``val_path`` (same layout) when given, else holds out the first documents of each source.

    ``counts: released`` (``conf/data_mix/mds.yaml``): the shards are a released, already sampled mixture, so
    the measured tokens are read as its shares (re-tempered only at a phase tau other than ``released_tau``);
    ``available`` (the default here, e.g. shards written with :class:`mmbert.data.MdsWriter` from a corpus):
    the phase's tau applies to them. Either way the shards are the data, so passes over them are known.
    """

    def __init__(
        self,
        path: str,
        tokenizer: str = "jhu-clsp/mmBERT-small",
        token_counts: Mapping[str, int] | None = None,
        val_path: str | None = None,
        val_languages: Sequence[str] | str | None = None,
        name: str | None = None,
        counts: str = AVAILABLE,
        released_tau: float | None = None,
        fixed_shares: Sequence[str] | str | None = None,
    ) -> None:
        if path is None or str(path) in ("", "???"):
            raise DataError("data_mix.path is not set (data_mix=mds data_mix.path=DIR)")
        self.root = resolve_path(path)
        self.name = name or self.root.name
        self.tokenizer = tokenizer
        self.shards = self._discover(self.root)
        self.val_shards = self._discover(resolve_path(val_path)) if val_path else {}
        self._given = _check_counts(token_counts, f"mix {self.name!r}") if token_counts else None
        self.val_languages = _as_list(val_languages)
        for v in self.val_languages or []:
            if v not in self.shards:
                raise DataError(
                    f"val_languages: unknown source {v!r} in {self.root} (have {sorted(self.shards)})"
                )
        self._set_counts_meaning(counts, released_tau, fixed_shares, self.shards)

    @staticmethod
    def _discover(root: Path) -> dict[str, list[MdsShard]]:
        if not root.is_dir():
            raise DataError(f"MDS path {root} does not exist or is not a folder")
        base = root / "train" if (root / "train").is_dir() else root
        groups: dict[str, list[MdsShard]] = {}
        for shard in find_shards(base):
            rel = shard.path.relative_to(base).parts
            folder = rel[0] if len(rel) > 1 else base.name
            name = normalize_language(folder) or folder
            groups.setdefault(name, []).append(shard)
        if not groups:
            raise DataError(f"{root}: no MDS shards (index.json + shard.NNNNN.mds) found")
        return groups

    @property
    def languages(self) -> list[str]:
        return list(self.shards)

    def _bos_eos(self) -> tuple[int, int]:
        tok = load_tokenizer(self.tokenizer)
        return tok.bos_token_id, tok.eos_token_id

    def train_source(self, lang: str, holdout: int = 0) -> Source:
        src = MdsSource(lang, self.shards[lang], *self._bos_eos())
        src.holdout = holdout
        return src

    def val_source(self, lang: str) -> Source | None:
        shards = self.val_shards.get(lang)
        return MdsSource(lang, shards, *self._bos_eos()) if shards else None

    def _given_counts(self) -> dict[str, int] | None:
        if self._given is None:
            return None
        missing = set(self.shards) - set(self._given)
        if missing:
            raise DataError(f"mix {self.name!r}: token_counts lack sources {sorted(missing)}")
        return {k: self._given[k] for k in self.shards}

    def known_counts(self) -> dict[str, int] | None:
        given = self._given_counts()
        if given is not None:
            return given
        files = {lang: [str(s.path) for s in shards] for lang, shards in self.shards.items()}
        return CountCache(self.root).find(files).get("mds")

    def available_tokens(self) -> dict[str, int] | None:
        return self.known_counts()  # released or not, the shards are all the data there is

    def mean_doc_tokens(self) -> dict[str, float]:
        cache = CountCache(self.root)
        files = {lang: [str(s.path) for s in shards] for lang, shards in self.shards.items()}
        means = {lang: cache.mean_doc_tokens("mds", lang, f) for lang, f in files.items()}
        return {lang: m for lang, m in means.items() if m is not None}

    def token_counts(self) -> dict[str, int]:
        given = self._given_counts()
        if given is not None:
            return given
        tok = load_tokenizer(self.tokenizer)
        sources = {lang: self.train_source(lang) for lang in self.shards}
        # Pre-tokenized: exact counting reads the shards but tokenizes nothing.
        return cached_counts(
            CountCache(self.root), "mds", sources, lambda src: (*measure_tokens(src, tok), False), "exact"
        )
