"""Checkpoint I/O for merging: opening inputs (any format, through :mod:`mmbert.checkpoint`'s lazy readers), a
streaming safetensors writer, hashing, staging.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmbert.checkpoint import (
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX_FILE,
    CheckpointReader,
    TensorInfo,
    find_tokenizer_files,
    open_reader,
)
from mmbert.checkpoint.readers import SAFETENSORS_DTYPES, Rows
from mmbert.errors import CheckpointError, MergeError

__all__ = [
    "CheckpointReader",
    "MergeError",
    "Rows",
    "SafetensorsShardWriter",
    "TensorInfo",
    "copy_tokenizer_files",
    "open_checkpoint",
    "sha256_file",
    "staged_directory",
]

SAFETENSORS_SINGLE = SAFETENSORS_FILE
SAFETENSORS_INDEX = SAFETENSORS_INDEX_FILE
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def open_checkpoint(path: str | Path) -> CheckpointReader:
    """Open a merge input of any format the project reads; it must say which architecture it holds."""
    try:
        reader = open_reader(path)
        if reader.config is None:
            reader.require_config()
    except CheckpointError as err:
        raise MergeError(str(err)) from err
    return reader


def copy_tokenizer_files(source: Path, destination: Path) -> list[str]:
    names = []
    for file in find_tokenizer_files(source):
        shutil.copyfile(file, destination / file.name)
        names.append(file.name)
    return names


def sha256_file(path: Path, progress: Callable[[int], object] | None = None, block: int = 1 << 23) -> str:
    """Streamed sha256 of a file (plain reads: the page cache holds the data, not this process)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def safetensors_dtype_name(dtype: torch.dtype) -> str:
    if dtype not in _DTYPE_NAMES:
        raise MergeError(f"dtype {dtype} cannot be stored in safetensors by this writer")
    return _DTYPE_NAMES[dtype]


class SafetensorsShardWriter:
    """Writes planned tensors into safetensors shards chunk by chunk, never holding a whole tensor.

    Shapes and dtypes are known up front, so each shard's header is written first and the data follows
    in plan order. Tensors go to shards greedily by `shard_size` bytes; a tensor larger than that gets a
    shard of its own. One shard is `model.safetensors`; more get Hugging Face names and an index.
    """

    def __init__(self, folder: Path, plan: Sequence[tuple[str, TensorInfo]], shard_size: int) -> None:
        if shard_size <= 0:
            raise MergeError(f"shard_size must be positive, got {shard_size}")
        self.folder = folder
        self._sizes = {name: info.numel * info.dtype.itemsize for name, info in plan}
        self._infos = dict(plan)
        shards: list[list[str]] = []
        used = 0
        for name, _ in plan:
            size = self._sizes[name]
            if not shards or (used > 0 and used + size > shard_size):
                shards.append([])
                used = 0
            shards[-1].append(name)
            used += size
        n = len(shards)
        self.shards = [
            (SAFETENSORS_SINGLE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors", names)
            for i, names in enumerate(shards)
        ]
        self._order = iter([(file, name) for file, names in self.shards for name in names])
        self._file: Any = None
        self._file_name = ""
        self._current: str | None = None
        self._left = 0

    def _header(self, names: list[str]) -> bytes:
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name in names:
            info = self._infos[name]
            end = offset + self._sizes[name]
            header[name] = {
                "dtype": safetensors_dtype_name(info.dtype),
                "shape": list(info.shape),
                "data_offsets": [offset, end],
            }
            offset = end
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keeps the data 8-byte aligned, as the reference writer does
        return len(raw).to_bytes(8, "little") + raw

    def _next_tensor(self, name: str) -> None:
        try:
            file, expected = next(self._order)
        except StopIteration:
            raise RuntimeError(f"tensor {name!r} was not planned for writing") from None
        if expected != name:
            raise RuntimeError(f"writing {name!r} but the plan expects {expected!r} next")
        if file != self._file_name:
            self._close_file()
            self._file = (self.folder / file).open("wb")
            self._file_name = file
            self._file.write(self._header(next(names for f, names in self.shards if f == file)))
        self._current, self._left = name, self._sizes[name]

    def write(self, name: str, chunk: Tensor) -> None:
        """Append the next rows of tensor `name` (already in its planned dtype)."""
        if self._current is None:
            self._next_tensor(name)
        if name != self._current:
            raise RuntimeError(f"writing {name!r} before {self._current!r} is complete")
        info = self._infos[name]
        if chunk.dtype != info.dtype:
            raise RuntimeError(f"chunk of {name!r} is {chunk.dtype}, planned {info.dtype}")
        data = chunk.contiguous().reshape(-1).view(torch.uint8)
        if data.numel() > self._left:
            raise RuntimeError(f"too many bytes written for {name!r}")
        if sys.byteorder != "little":
            raise RuntimeError("safetensors is little-endian; this writer only runs on little-endian hosts")
        self._file.write(data.numpy())
        self._left -= data.numel()
        if self._left == 0:
            self._current = None

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> list[str]:
        """Finish the last shard, write the index when sharded; returns the files written."""
        self._close_file()
        leftover = next(self._order, None)
        if self._current is not None or leftover is not None:
            missing = self._current or leftover[1]  # type: ignore[index]
            raise RuntimeError(f"tensor {missing!r} was planned but not fully written")
        files = [file for file, _ in self.shards]
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(self._sizes.values())},
                "weight_map": {name: file for file, names in self.shards for name in names},
            }
            (self.folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
            files.append(SAFETENSORS_INDEX)
        return files

    def abort(self) -> None:
        self._close_file()


@contextmanager
def staged_directory(output_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh hidden folder beside `output_dir` that replaces it only if the block succeeds.

    On any error the folder is removed, so a failed merge leaves nothing behind; an existing
    `output_dir` is refused unless `overwrite`, and replaced only after the new one is complete.
    """
    _check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        _check_output_dir(output_dir, overwrite)
        if output_dir.exists():
            retired = output_dir.parent / f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}"
            output_dir.rename(retired)
            staging.rename(output_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() or output_dir.is_symlink():
        if not overwrite:
            raise MergeError(f"output_dir {output_dir} already exists; set overwrite=true to replace it")
        if not output_dir.is_dir():
            raise MergeError(f"output_dir {output_dir} exists and is not a folder; refusing to replace it")
