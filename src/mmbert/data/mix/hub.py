"""Hub datasets: :class:`HubMix`, the released mmBERT mixtures (languages and their token counts) over
datasets such as ``HuggingFaceFW/fineweb-2``, each language streamed as a :class:`HubSource`."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from mmbert import hub
from mmbert.data.langcodes import normalize_language
from mmbert.data.mix.base import Doc, MixSpec, Source
from mmbert.data.mix.count_meaning import AVAILABLE, CountMeaning
from mmbert.data.mix.settings import as_list, check_counts
from mmbert.data.readers import Block, SkipCounter, decode_record, file_format, iter_blocks
from mmbert.errors import DataError

log = logging.getLogger(__name__)


class HubSource(Source):
    """One or more configs of a hub dataset (e.g. ``HuggingFaceFW/fineweb-2``, ``rus_Cyrl``), streamed.

    The files come from the repo's :func:`mmbert.hub.snapshot` (one listing per run, pinned to a commit) and are
    read with range requests (:func:`mmbert.hub.open_remote`) by the same block readers as local files, so a
    cursor is a block index and a restart reads on from it. ``repo`` may be a local folder laid out like the
    hub repository (a mirror: README with ``configs``, or plain data files).
    """

    def __init__(
        self,
        name: str,
        repo: str,
        configs: Sequence[str | None],
        split: str = "train",
        text_field: str = "text",
        holdout: int = 0,
        revision: str | None = None,
    ) -> None:
        self.name = name
        self.repo, self.configs, self.split = repo, list(configs), split
        self.text_field, self.holdout, self.revision = text_field, holdout, revision
        self._listed: list[tuple[str, int, str, bool]] | None = None  # (url or path, size, format, remote)

    def _files(self) -> list[tuple[str, int, str, bool]]:
        if self._listed is None:
            snap = hub.snapshot(self.repo, self.revision)
            paths = [p for config in self.configs for p in snap.data_files(config, self.split)]
            self._listed = [
                (snap.url(p), snap.files[p], file_format(p) or "parquet", not snap.local) for p in paths
            ]
        return self._listed

    @property
    def absent(self) -> str | None:
        """Why the source has no files (None when it has some)."""
        if self._files():
            return None
        where = hub.snapshot(self.repo, self.revision).where
        if not self.configs:
            return f"{where} has no config for language {self.name!r}"
        return f"{where} has no {self.split!r} files in config(s) {', '.join(map(str, self.configs))}"

    def files(self) -> Sequence[str]:
        return [url for url, *_ in self._files()]

    def blocks(self, file_idx: int, cursor: Any, block_size: int) -> Iterator[Block]:
        url, size, _, remote = self._files()[file_idx]
        opener = partial(hub.open_remote, url, size, url) if remote else None
        return iter_blocks(url, self.text_field, block_size, cursor or 0, opener)

    def decode(self, file_idx: int, raw: Any, skips: SkipCounter) -> Doc | None:
        return decode_record(raw, self._files()[file_idx][2], self.text_field, skips)


class HubMix(MixSpec):
    """A released mmBERT mixture: languages and their token counts, read from hub datasets.

    A language is a FineWeb2 config (``rus_Cyrl``) or an ISO 639-3 code (``rus``: every ``rus_*`` config of
    ``repo``, found with ``datasets.get_dataset_config_names``). ``sources`` overrides where a language comes
    from (``{lang: {repo, config, split, val_split, text_field}}``), e.g. English and code, which FineWeb2 has
    not. Languages without a validation split hold out their first training records for validation.

    ``counts``/``released_tau``/``fixed_shares``: what ``token_counts`` are
    (:mod:`mmbert.data.mix.count_meaning`); the generated released mixtures say ``released``, user-given
    counts default to ``available``.
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
        self._counts = check_counts(token_counts, f"mix {name!r}")
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
        self.val_languages = as_list(val_languages)
        for v in self.val_languages or []:
            if v not in self._counts:
                raise DataError(f"mix {name!r}: val_languages has {v!r}, which is not in the mix")
        fixed = tuple(as_list(fixed_shares) or ())
        self.meaning = CountMeaning(counts, released_tau, fixed, where=f"mix {name!r}", entries=self._counts)

    @property
    def languages(self) -> list[str]:
        return list(self._counts)

    def token_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def configs(self, lang: str) -> list[str]:
        """The configs of a language: itself if it names one, else all its ``{iso}_{Script}`` configs ([] when
        the repo has none: the language is then excluded like an empty local one).

        FineWeb2's ``{iso}_{Script}_removed`` configs hold filtered-out documents and are never matched.
        """
        available = hub.snapshot(self.repo, self.revision).config_names()
        if "_" in lang:
            return [lang] if lang in available else []
        return [c for c in available if re.fullmatch(rf"{re.escape(lang)}_[A-Z][a-z]{{3}}", c)]

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
        if not src.files():
            log.info("%s; validating %s on held-out training documents", src.absent, lang)
            return None
        return src
