"""What every mix and every source is: :class:`MixSpec` names a phase's languages and their token counts,
:class:`Source` reads the documents of one language as an ordered list of files read in blocks.

Sources expose one small interface to :mod:`mmbert.data.doc_stream`, which adds epochs, shuffling and
sharding on top; each backend module of :mod:`mmbert.data.mix` holds a mix and its source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mmbert.data.mix.count_meaning import CountMeaning
from mmbert.data.readers import Block, SkipCounter

Doc = str | np.ndarray  # text, or token ids (pre-tokenized sources, without bos/eos)


class Source(ABC):
    """``holdout``: raw records at the start of file 0 reserved for validation (sources without a test split);
    :class:`mmbert.data.doc_stream.DocStream` skips them."""

    name: str
    holdout: int = 0
    pretokenized: bool = False
    absent: str | None = None  # why the source has no files, where that says more than an empty list

    @abstractmethod
    def files(self) -> Sequence[str]:
        """Stable, ordered file labels (paths or URLs)."""

    @abstractmethod
    def blocks(self, file_idx: int, cursor: Any, block_size: int) -> Iterator[Block]:
        """Blocks of file ``file_idx`` from the one at ``cursor`` (None: the start)."""

    @abstractmethod
    def decode(self, file_idx: int, raw: Any, skips: SkipCounter) -> Doc | None:
        """A document from a raw record, or None for a bad record (counted in ``skips``)."""

    def first_docs(self, n: int, block_size: int = 256) -> list[Doc]:
        """The first ``n`` good documents in file order."""
        docs: list[Doc] = []
        for f in range(len(self.files())):
            skips = SkipCounter()
            for block in self.blocks(f, None, block_size):
                for raw in block.raws:
                    if len(docs) == n:
                        return docs
                    doc = self.decode(f, raw, skips)
                    if doc is not None:
                        docs.append(doc)
        return docs

    def scan_head(self, n: int, block_size: int = 256) -> tuple[list[tuple[int, Doc]], bool]:
        """The good documents among the first ``n`` raw records of file 0, with their record indices, and
        whether a good document follows those records (in file 0 or a later file).

        Reads only up to the first such document, so ``scan_head(0)`` is a cheap "has documents" check.
        """
        head: list[tuple[int, Doc]] = []
        for f in range(len(self.files())):
            skips = SkipCounter()
            for block in self.blocks(f, None, block_size):
                for i, raw in enumerate(block.raws, block.first_record):
                    doc = self.decode(f, raw, skips)
                    if doc is None:
                        continue
                    if f > 0 or i >= n:
                        return head, True
                    head.append((i, doc))
        return head, False


class MixSpec(ABC):
    """Data mixture: ``languages`` in training order, their token counts, and what those counts mean
    (``meaning``), which turns them into a phase's target shares: ``mix.meaning.weights(counts, tau)``.

    Two ways to the counts: :meth:`token_counts` measures (and caches) what it must, :meth:`known_counts`
    reads no data. Relative paths are resolved against the repository root (:mod:`mmbert.data.paths`).
    """

    name: str
    tokenizer: str
    val_languages: list[str] | None = None
    meaning: CountMeaning = CountMeaning()  # immutable: a shared default is safe

    @property
    @abstractmethod
    def languages(self) -> list[str]: ...

    @abstractmethod
    def token_counts(self) -> dict[str, int]:
        """Tokens per language (given by the mix, or measured with the mix's tokenizer and cached)."""

    def known_counts(self) -> dict[str, int] | None:
        """:meth:`token_counts` where it needs no reading of data (given or cached), else None."""
        return self.token_counts()

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
