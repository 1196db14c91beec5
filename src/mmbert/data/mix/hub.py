"""Hub datasets: :class:`HubMix`, the released mmBERT mixtures (languages and their token counts) over
datasets such as ``HuggingFaceFW/fineweb-2``, each language streamed as a :class:`HubSource`."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from mmbert.data.langcodes import normalize_language
from mmbert.data.mix.base import Doc, MixSpec, Source
from mmbert.data.mix.count_meaning import AVAILABLE, CountMeaning
from mmbert.data.mix.settings import as_list, check_counts
from mmbert.data.readers import Block, SkipCounter, decode_record
from mmbert.errors import DataError

log = logging.getLogger(__name__)


@cache
def _hub_files(
    repo: str, config: str | None, split: str, revision: str | None
) -> tuple[str, tuple[str, ...]]:
    """(packaged module, data files) of one config/split, as ``datasets`` resolves them."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(repo, config, revision=revision)
    except Exception as e:  # datasets raises many types for a missing repo/config; name what was asked
        raise DataError(f"cannot open hub dataset {repo!r} config {config!r}: {type(e).__name__}: {e}") from e
    files = (builder.config.data_files or {}).get(split)
    if not files:
        raise DataError(f"hub dataset {repo!r} config {config!r} has no split {split!r}")
    return builder.name, tuple(str(f) for f in files)


@cache
def hub_configs(repo: str, revision: str | None = None) -> tuple[str, ...]:
    import datasets

    try:
        return tuple(datasets.get_dataset_config_names(repo, revision=revision))
    except Exception as e:
        raise DataError(f"cannot list the configs of hub dataset {repo!r}: {type(e).__name__}: {e}") from e


_MISSING = object()


class HubSource(Source):
    """One or more configs of a hub dataset (e.g. ``HuggingFaceFW/fineweb-2``, ``rus_Cyrl``), streamed.

    Files are resolved by ``datasets`` (``load_dataset_builder(...).config.data_files``) and each is read with
    ``load_dataset(<module>, data_files=[file], streaming=True)``; the cursor of a block is the streaming
    dataset's ``state_dict()`` at its start, so a restart resumes inside a file without re-reading it.
    ``repo`` may be a local folder laid out like the hub repository (a README with ``configs``).
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

    def _resolved(self) -> list[tuple[str, str]]:
        out = []
        for config in self.configs:
            module, files = _hub_files(self.repo, config, self.split, self.revision)
            out.extend((module, f) for f in files)
        return out

    def files(self) -> Sequence[str]:
        return [f for _, f in self._resolved()]

    def blocks(self, file_idx: int, cursor: Any, block_size: int) -> Iterator[Block]:
        import datasets

        module, url = self._resolved()[file_idx]
        ds = datasets.load_dataset(module, data_files={"train": [url]}, split="train", streaming=True)
        ordinal, first = 0, 0
        if cursor is not None:
            ds.load_state_dict(cursor["state"])
            ordinal, first = cursor["ordinal"], cursor["first_record"]
        it = iter(ds)
        while True:
            start = {"state": copy.deepcopy(ds.state_dict()), "ordinal": ordinal, "first_record": first}
            raws = []
            for example in it:
                raws.append(example.get(self.text_field, _MISSING))
                if len(raws) == block_size:
                    break
            if not raws:
                return
            yield Block(start, ordinal, first, raws)
            ordinal += 1
            first += len(raws)

    def decode(self, file_idx: int, raw: Any, skips: SkipCounter) -> Doc | None:
        if raw is _MISSING:
            skips[f"no '{self.text_field}'"] += 1
            return None
        return decode_record(raw, "parquet", self.text_field, skips)


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
