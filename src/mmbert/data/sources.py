"""Sources: the documents of one language (or code) of a mix, as an ordered list of files read in blocks.

Three kinds: local files (:class:`FileSource`), a hub dataset through ``datasets`` streaming
(:class:`HubSource`) and pre-tokenized MDS shards (:class:`MdsSource`). All expose the same small interface
to :mod:`mmbert.data.doc_stream`, which adds epochs, shuffling and sharding on top.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.mds import MdsShard, ShardReader, read_column
from mmbert.data.readers import Block, SkipCounter, decode_record, file_format, iter_blocks
from mmbert.errors import DataError

Doc = str | np.ndarray  # text, or token ids (pre-tokenized sources, without bos/eos)


class Source(ABC):
    """``holdout``: raw records at the start of file 0 reserved for validation (sources without a test split);
    :class:`mmbert.data.doc_stream.DocStream` skips them."""

    name: str
    holdout: int = 0
    pretokenized: bool = False

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


class FileSource(Source):
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


_MISSING = object()


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
