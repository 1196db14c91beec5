"""Local FineWeb2-layout folders: :class:`FolderMix` over the language folders :mod:`~mmbert.data.mix.layout`
finds, each language read as a :class:`FileSource` of its data files.

Token counts are given, or counted (``exact``) or estimated from a sample (``estimate``) with the mix's
tokenizer, once, and cached beside the data (:mod:`mmbert.data.counts`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
from mmbert.data.mix.base import Doc, MixSpec, Source
from mmbert.data.mix.layout import data_files, discover_languages
from mmbert.data.mix.settings import as_list, check_counts, mix_root
from mmbert.data.readers import Block, SkipCounter, decode_record, file_format, iter_blocks
from mmbert.data.tokenizer import load_tokenizer
from mmbert.errors import DataError


class FileSource(Source):
    """Local data files of one language (``.parquet``, ``.jsonl[.gz|.zst]``, ``.txt``), read in their order."""

    def __init__(self, name: str, files: Sequence[Path], text_field: str = "text", holdout: int = 0) -> None:
        self.name = name
        self._files = [Path(f) for f in files]
        self.text_field = text_field
        self.holdout = holdout
        self._formats = [file_format(f) for f in self._files]

    def files(self) -> Sequence[str]:
        return [str(f) for f in self._files]

    def blocks(self, file_idx: int, cursor: Any, block_size: int) -> Iterator[Block]:
        return iter_blocks(self._files[file_idx], self.text_field, block_size, cursor or 0)

    def decode(self, file_idx: int, raw: Any, skips: SkipCounter) -> Doc | None:
        return decode_record(raw, self._formats[file_idx], self.text_field, skips)  # type: ignore[arg-type]


class FolderMix(MixSpec):
    """A local FineWeb2-layout folder: ``{lang}_{Script}/train/*`` (+ ``test/*``), also under ``data/``.

    ``count_tokens``: ``estimate`` (tokens per byte of a ``sample_bytes`` sample of each language, scaled by
    its size) or ``exact`` (tokenize everything); see :mod:`mmbert.data.counts`. The counts are the
    languages' available tokens.
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
        self.root = mix_root(path, "folder")
        self.name = name or self.root.name
        self.tokenizer = tokenizer
        self.text_field = text_field
        self.count_method = check_method(count_tokens, "data_mix.count_tokens")
        if not isinstance(sample_bytes, int) or sample_bytes < 1:
            raise DataError(f"data_mix.sample_bytes must be an integer >= 1, got {sample_bytes!r}")
        self.sample_bytes = sample_bytes
        self.folders = discover_languages(self.root)
        wanted = as_list(languages)
        if wanted is None:
            self._languages = list(self.folders)
        else:
            self._languages = [self._known(lang, "languages") for lang in wanted]
        self.val_languages = [self._known(v, "val_languages") for v in as_list(val_languages) or []] or None
        self._given: dict[str, int] | None = None
        if token_counts:
            given = check_counts(token_counts, f"mix {self.name!r}")
            missing = set(self._languages) - set(given)
            if missing:
                raise DataError(f"mix {self.name!r}: token_counts lack languages {sorted(missing)}")
            self._given = {lang: given[lang] for lang in self._languages}

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

    def token_counts(self) -> dict[str, int]:
        if self._given is not None:
            return dict(self._given)
        tok = load_tokenizer(self.tokenizer)

        def count(src: Source) -> tuple[int, int, bool]:
            if self.count_method == ESTIMATE:
                return estimate_tokens(src, tok, self.sample_bytes)  # type: ignore[arg-type]
            return (*measure_tokens(src, tok), False)

        sources = {lang: self.train_source(lang) for lang in self._languages}
        return cached_counts(
            CountCache(self.root), tokenizer_fingerprint(tok), sources, count, self.count_method
        )

    def known_counts(self) -> dict[str, int] | None:
        if self._given is not None:
            return dict(self._given)
        # Looked up without loading the tokenizer, so only one tokenizer's counts covering every language
        # tell the mix's counts (with several, which one is the mix's needs the tokenizer).
        found = list(CountCache(self.root).find(self._train_files()).values())
        return found[0] if len(found) == 1 else None

    def mean_doc_tokens(self) -> dict[str, float]:
        cache, tok_key = CountCache(self.root), tokenizer_fingerprint(load_tokenizer(self.tokenizer))
        means = {lang: cache.mean_doc_tokens(tok_key, lang, f) for lang, f in self._train_files().items()}
        return {lang: m for lang, m in means.items() if m is not None}
