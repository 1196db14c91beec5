"""Pre-tokenized MDS shards: :class:`MdsMix`, one source per top-level subfolder of a shard folder, each read
as an :class:`MdsSource` (shard I/O itself is :mod:`mmbert.data.mds`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.counts import MDS_KEY, CountCache, cached_counts, measure_tokens
from mmbert.data.langcodes import normalize_language
from mmbert.data.mds import MdsShard, ShardReader, find_shards, read_column
from mmbert.data.mix.base import Doc, MixSpec, Source
from mmbert.data.mix.count_meaning import AVAILABLE, CountMeaning
from mmbert.data.mix.settings import as_list, check_counts, mix_root
from mmbert.data.paths import resolve_path
from mmbert.data.readers import Block, SkipCounter
from mmbert.data.tokenizer import load_tokenizer
from mmbert.errors import DataError


class MdsSource(Source):
    """Pre-tokenized documents (``input_ids``) from MDS shards; one shard is one file."""

    pretokenized = True

    def __init__(
        self, name: str, shards: Sequence[MdsShard], bos_id: int | None = None, eos_id: int | None = None
    ) -> None:
        self.name = name
        self.shards = list(shards)
        # The released shards start documents with BOS; the pipeline frames every chunk itself.
        self.bos_id, self.eos_id = bos_id, eos_id

    def files(self) -> Sequence[str]:
        return [str(s.path) for s in self.shards]

    def blocks(self, file_idx: int, cursor: Any, block_size: int) -> Iterator[Block]:
        reader = ShardReader(self.shards[file_idx])
        n = len(reader)
        for ordinal in range(cursor or 0, -(-n // block_size)):
            lo = ordinal * block_size
            yield Block(ordinal, ordinal, lo, [reader.raw(i) for i in range(lo, min(lo + block_size, n))])

    def decode(self, file_idx: int, raw: Any, skips: SkipCounter) -> Doc | None:
        ids = np.asarray(read_column(self.shards[file_idx], raw, "input_ids"), dtype=np.int64).reshape(-1)
        if ids.size and ids[0] == self.bos_id:
            ids = ids[1:]
        if ids.size and ids[-1] == self.eos_id:
            ids = ids[:-1]
        if not ids.size:
            skips["empty"] += 1
            return None
        return ids.astype(np.int32)


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
        self.root = mix_root(path, "mds")
        self.name = name or self.root.name
        self.tokenizer = tokenizer
        self.shards = self._discover(self.root)
        self.val_shards = self._discover(resolve_path(val_path)) if val_path else {}
        self._given = check_counts(token_counts, f"mix {self.name!r}") if token_counts else None
        self.val_languages = as_list(val_languages)
        for v in self.val_languages or []:
            if v not in self.shards:
                raise DataError(
                    f"val_languages: unknown source {v!r} in {self.root} (have {sorted(self.shards)})"
                )
        fixed = tuple(as_list(fixed_shares) or ())
        self.meaning = CountMeaning(
            counts, released_tau, fixed, of_data=True, where=f"mix {self.name!r}", entries=self.shards
        )

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

    def _files(self) -> dict[str, list[str]]:
        return {lang: [str(s.path) for s in shards] for lang, shards in self.shards.items()}

    def _given_for_shards(self) -> dict[str, int] | None:
        if self._given is None:
            return None
        missing = set(self.shards) - set(self._given)
        if missing:
            raise DataError(f"mix {self.name!r}: token_counts lack sources {sorted(missing)}")
        return {k: self._given[k] for k in self.shards}

    def token_counts(self) -> dict[str, int]:
        given = self._given_for_shards()
        if given is not None:
            return given
        tok = load_tokenizer(self.tokenizer)
        sources = {lang: self.train_source(lang) for lang in self.shards}
        # Pre-tokenized: exact counting reads the shards but tokenizes nothing.
        return cached_counts(
            CountCache(self.root), MDS_KEY, sources, lambda src: (*measure_tokens(src, tok), False), "exact"
        )

    def known_counts(self) -> dict[str, int] | None:
        given = self._given_for_shards()
        if given is not None:
            return given
        return CountCache(self.root).find(self._files()).get(MDS_KEY)

    def mean_doc_tokens(self) -> dict[str, float]:
        cache = CountCache(self.root)
        means = {lang: cache.mean_doc_tokens(MDS_KEY, lang, f) for lang, f in self._files().items()}
        return {lang: m for lang, m in means.items() if m is not None}
