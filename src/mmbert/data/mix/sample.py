"""The embedded sample corpus ``data/sample``: a folder mix whose ``languages.json`` names the languages (and
any upweighted ones) of each phase's subset."""

from __future__ import annotations

import json
from collections.abc import Sequence

from mmbert.data.mix.count_meaning import CountMeaning
from mmbert.data.mix.folder import FolderMix
from mmbert.data.paths import resolve_path
from mmbert.errors import DataError


class SampleMix(FolderMix):
    """The embedded sample corpus; ``subset`` picks the languages of one phase (see ``languages.json``).

    Subsets mirror the real phases: ``pretrain`` (60 languages -> 9), ``midtrain`` and ``decay-cont``
    (110 -> 16), ``decay-all`` (all; also named ``decay``, the phase name), and ``decay-eng`` (``midtrain``
    with English tokens upweighted: its counts are the files' tokens times the factor, which tau then applies
    to).
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
        self.meaning = CountMeaning(upweight=subsets[subset].get("upweight", {}))
        super().__init__(
            path,
            tokenizer,
            subsets[subset]["languages"],
            val_languages=val_languages,
            name=f"sample-{subset}",
        )

    def token_counts(self) -> dict[str, int]:
        return self.meaning.upweighted(super().token_counts())

    def known_counts(self) -> dict[str, int] | None:
        counts = super().known_counts()
        return None if counts is None else self.meaning.upweighted(counts)
