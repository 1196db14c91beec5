"""Checkpoint I/O for merging: lazy tensor readers, a streaming safetensors writer, hashing, staging.

Readers hand out owned copies of row ranges and drop the file pages they touched, so reading a whole
model through them keeps resident memory at about one chunk per input rather than one model per input.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from mmbert.hf import hf_config_dict
from mmbert.model import MmBertConfig

__all__ = [
    "CheckpointReader",
    "HfFolderReader",
    "LightningCheckpointReader",
    "MergeError",
    "SafetensorsShardWriter",
    "TensorInfo",
    "copy_tokenizer_files",
    "find_tokenizer_files",
    "open_checkpoint",
    "sha256_file",
    "staged_directory",
]

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CKPT_PREFIX = "net."
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)

_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _SAFETENSORS_DTYPES.items()}


class MergeError(ValueError):
    """Bad merge input or configuration; the message names the key, tensor or path at fault."""


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


Rows = tuple[int, int] | None  # a [start, stop) range along dim 0, or None for the whole tensor


def _owned(view: Tensor) -> Tensor:
    """An owned copy of a (possibly file-backed) view: float tensors as fp32, others as they are."""
    if view.is_floating_point():
        return view.to(torch.float32, copy=True)
    return view.clone()


class CheckpointReader:
    """A model checkpoint opened for lazy reading; tensor names are Hugging Face ModernBERT names."""

    kind: str
    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]

    def read(self, name: str, rows: Rows = None) -> Tensor:
        """Rows of a tensor as an owned copy; float tensors come back as fp32."""
        raise NotImplementedError

    def location(self, name: str) -> Path:
        """The file holding a tensor, for error messages."""
        raise NotImplementedError

    def content_files(self) -> list[Path]:
        """Files whose hashes identify this input in merge.json."""
        raise NotImplementedError

    def tokenizer_dir(self) -> Path | None:
        """A local folder with this input's tokenizer files, if there is one."""
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the reader holds open."""


class HfFolderReader(CheckpointReader):
    """A Hugging Face folder: config.json plus model.safetensors or a sharded safetensors index."""

    kind = "hf"

    def __init__(self, path: Path) -> None:
        self.path = path
        config_path = path / "config.json"
        if not config_path.is_file():
            raise MergeError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        self.config = json.loads(config_path.read_text())
        index = self._read_index()
        files = sorted(set(index.values())) if index is not None else [path / SAFETENSORS_SINGLE]
        self.tensors = {}
        self._file_of: dict[str, Path] = {}
        for file in files:
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    if index is not None and index.get(name) != file:
                        continue  # the index decides which copy of a tensor counts
                    piece = handle.get_slice(name)
                    dtype = piece.get_dtype()
                    if dtype not in _SAFETENSORS_DTYPES:
                        raise MergeError(f"tensor {name!r} in {file} has unsupported dtype {dtype}")
                    self.tensors[name] = TensorInfo(tuple(piece.get_shape()), _SAFETENSORS_DTYPES[dtype])
                    self._file_of[name] = file
        for name, file in (index or {}).items():
            if name not in self._file_of:
                raise MergeError(f"{path / SAFETENSORS_INDEX} puts tensor {name!r} in {file.name}: not there")
        self._files = files

    def _read_index(self) -> dict[str, Path] | None:
        index_path = self.path / SAFETENSORS_INDEX
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text()).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise MergeError(f"{index_path} has no weight_map")
            index = {name: self.path / file for name, file in weight_map.items()}
            for file in set(index.values()):
                if not file.is_file():
                    raise MergeError(f"{index_path} names {file.name}, which does not exist")
            return index
        if (self.path / SAFETENSORS_SINGLE).is_file():
            return None
        raise MergeError(f"{self.path} has neither {SAFETENSORS_SINGLE} nor {SAFETENSORS_INDEX}")

    def read(self, name: str, rows: Rows = None) -> Tensor:
        # A safe_open handle maps the file and keeps every page it touched resident until it closes:
        # opening one per read keeps resident memory at one chunk.
        with safe_open(self._file_of[name], framework="pt") as handle:
            view = handle.get_tensor(name) if rows is None else handle.get_slice(name)[rows[0] : rows[1]]
            out = _owned(view)
            del view
        return out

    def location(self, name: str) -> Path:
        return self._file_of[name]

    def content_files(self) -> list[Path]:
        extra = [self.path / SAFETENSORS_INDEX] if (self.path / SAFETENSORS_INDEX).is_file() else []
        return [self.path / "config.json", *extra, *self._files]

    def tokenizer_dir(self) -> Path | None:
        return self.path if find_tokenizer_files(self.path) else None


class _PageReleaser:
    """Drops file-backed pages of an mmap'd checkpoint once a chunk has been copied out of them.

    Pages of a read-only file mapping stay resident until the mapping goes away, which for a
    `torch.load(mmap=True)` checkpoint is the whole merge. madvise(MADV_DONTNEED) gives them back; the
    kernel re-reads them from the page cache should they be touched again. Only addresses inside a
    mapping of this very file are released (checked against /proc/self/maps), so anonymous memory is
    never touched; elsewhere (non-Linux) this is a no-op and memory is merely higher.
    """

    _MADV_DONTNEED = 4

    def __init__(self, path: Path) -> None:
        self._ranges: list[tuple[int, int]] = []
        self._madvise: Callable[..., int] | None = None
        maps = Path("/proc/self/maps")
        if not sys.platform.startswith("linux") or not maps.is_file():
            return
        target = str(path.resolve())
        for line in maps.read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5] == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                self._ranges.append((start, end))
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._madvise = libc.madvise
        self._page = os.sysconf("SC_PAGE_SIZE")

    def release(self, view: Tensor) -> None:
        if self._madvise is None or not view.is_contiguous() or view.numel() == 0:
            return
        start = view.data_ptr()
        end = start + view.numel() * view.element_size()
        for lo, hi in self._ranges:
            if lo <= start and end <= hi:
                first = max(lo, start - start % self._page)
                last = min(hi, -(-end // self._page) * self._page)
                self._madvise(first, last - first, self._MADV_DONTNEED)
                return


class LightningCheckpointReader(CheckpointReader):
    """A Lightning checkpoint of this project: `state_dict` keys are "net." + Hugging Face names."""

    kind = "lightning"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        except Exception as err:
            raise MergeError(f"cannot load Lightning checkpoint {path}: {err}") from err
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise MergeError(f"{path} has no 'state_dict': not a Lightning checkpoint")
        model_config = checkpoint.get("mmbert_config")
        if not isinstance(model_config, dict):
            raise MergeError(f"{path} has no 'mmbert_config' dict: not saved by this project's training")
        try:
            self.config = hf_config_dict(MmBertConfig(**model_config))
        except (TypeError, ValueError) as err:
            raise MergeError(f"'mmbert_config' in {path} does not fit MmBertConfig: {err}") from err
        tokenizer = checkpoint.get("mmbert_tokenizer")
        self._tokenizer = Path(tokenizer) if isinstance(tokenizer, str) and Path(tokenizer).is_dir() else None
        # Only the network's weights: anything else the module stored is not part of the model.
        self._state = {
            key.removeprefix(CKPT_PREFIX): value
            for key, value in checkpoint["state_dict"].items()
            if key.startswith(CKPT_PREFIX) and isinstance(value, Tensor)
        }
        if not self._state:
            raise MergeError(f"state_dict of {path} has no {CKPT_PREFIX!r} tensors")
        self.tensors = {name: TensorInfo(tuple(t.shape), t.dtype) for name, t in self._state.items()}
        self._releaser = _PageReleaser(path)

    def read(self, name: str, rows: Rows = None) -> Tensor:
        tensor = self._state[name]
        view = tensor if rows is None else tensor[rows[0] : rows[1]]
        out = _owned(view)
        self._releaser.release(view)
        return out

    def location(self, name: str) -> Path:
        return self.path

    def content_files(self) -> list[Path]:
        return [self.path]

    def tokenizer_dir(self) -> Path | None:
        if self._tokenizer is None or not find_tokenizer_files(self._tokenizer):
            return None
        return self._tokenizer

    def close(self) -> None:
        self._state.clear()


def open_checkpoint(path: str | Path) -> CheckpointReader:
    """Open a Hugging Face folder or a Lightning `.ckpt` file for lazy reading."""
    path = Path(path)
    if path.is_dir():
        return HfFolderReader(path)
    if path.is_file() and path.suffix == ".ckpt":
        return LightningCheckpointReader(path)
    if not path.exists():
        raise MergeError(f"input {path} does not exist")
    raise MergeError(f"input {path} is neither a Hugging Face folder nor a Lightning .ckpt file")


def find_tokenizer_files(folder: Path) -> list[Path]:
    """Tokenizer files in a folder; empty unless it holds a tokenizer.json or tokenizer_config.json."""
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
        return []
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


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
