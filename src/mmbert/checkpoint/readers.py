"""Lazy tensor readers, one per format, all speaking the project's (HF ModernBERT) tensor names.

Readers hand out owned copies of row ranges and drop the file pages they touched, so reading a whole model
through them keeps resident memory at about one chunk per input rather than one model per input.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from mmbert.checkpoint.flexbert import (
    composer_hf_config,
    composer_tokenizer_files,
    config_from_flexbert,
    project_state,
)
from mmbert.checkpoint.formats import (
    CONFIG_FILE,
    LIGHTNING_PREFIX,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX_FILE,
    TORCH_BIN_FILE,
    Format,
    find_tokenizer_files,
    format_of_content,
    format_of_path,
)
from mmbert.checkpoint.hf_config import config_from_hf_dict, hf_config_dict
from mmbert.checkpoint.safe_load import ALLOWED, safe_torch_load
from mmbert.errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError
from mmbert.model import MmBertConfig

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
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
    """A model checkpoint opened for lazy reading; tensor names are the project's (HF ModernBERT) names.

    ``model_config`` is the architecture the file describes (None when it carries none: ``config_problem``
    says why); ``config`` the same as an HF config.json dict, as a merge writes it."""

    kind: Format
    path: Path
    tensors: dict[str, TensorInfo]
    model_config: MmBertConfig | None = None
    config_problem: str | None = None
    tokenizer_source: str | None = None  # a folder or hub name recorded by the file

    @property
    def config(self) -> dict[str, Any] | None:
        return None if self.model_config is None else hf_config_dict(self.model_config)

    def require_config(self) -> MmBertConfig:
        if self.model_config is None:
            raise CheckpointError(f"{self.path}: {self.config_problem or 'carries no model config'}")
        return self.model_config

    def read(self, name: str, rows: Rows = None) -> Tensor:
        """Rows of a tensor as an owned copy; float tensors come back as fp32."""
        raise NotImplementedError

    def read_all(self) -> dict[str, Tensor]:
        return {name: self.read(name) for name in self.tensors}

    def location(self, name: str) -> Path:
        """The file holding a tensor, for error messages."""
        return self.path

    def content_files(self) -> list[Path]:
        """Files whose hashes identify this input (merge.json)."""
        return [self.path]

    def tokenizer_dir(self) -> Path | None:
        """A local folder with this input's tokenizer files, if there is one."""
        source = self.tokenizer_source
        if source is None or not Path(source).is_dir() or not find_tokenizer_files(Path(source)):
            return None
        return Path(source)

    def close(self) -> None:
        """Release whatever the reader holds open."""


class HfFolderReader(CheckpointReader):
    """A Hugging Face folder: config.json plus model.safetensors, a sharded safetensors index or
    pytorch_model.bin (read without pickle code, like every torch file here)."""

    kind = Format.HF

    def __init__(self, path: Path) -> None:
        self.path = path
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(
                f"{path} is a folder without {CONFIG_FILE}: not a Hugging Face model folder"
            )
        self._config = json.loads(config_path.read_text())
        self.tokenizer_source = str(path) if find_tokenizer_files(path) else None
        self.tensors = {}
        self._file_of: dict[str, Path] = {}
        self._bin: dict[str, Tensor] | None = None
        index = self._read_index()
        if index is None and not (path / SAFETENSORS_FILE).is_file():
            self._open_bin()
            self._files = [path / TORCH_BIN_FILE]
            return
        files = sorted(set(index.values())) if index is not None else [path / SAFETENSORS_FILE]
        for file in files:
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    if index is not None and index.get(name) != file:
                        continue  # the index decides which copy of a tensor counts
                    piece = handle.get_slice(name)
                    dtype = piece.get_dtype()
                    if dtype not in SAFETENSORS_DTYPES:
                        raise CheckpointError(f"tensor {name!r} in {file} has unsupported dtype {dtype}")
                    self.tensors[name] = TensorInfo(tuple(piece.get_shape()), SAFETENSORS_DTYPES[dtype])
                    self._file_of[name] = file
        for name, file in (index or {}).items():
            if name not in self._file_of:
                raise CheckpointError(
                    f"{path / SAFETENSORS_INDEX_FILE} puts tensor {name!r} in {file.name}: not there"
                )
        self._files = files

    @property
    def config(self) -> dict[str, Any]:
        return self._config

    @property
    def model_config(self) -> MmBertConfig:  # type: ignore[override]
        return config_from_hf_dict(self._config, source=str(self.path / CONFIG_FILE))

    def _read_index(self) -> dict[str, Path] | None:
        index_path = self.path / SAFETENSORS_INDEX_FILE
        if not index_path.is_file():
            return None
        weight_map = json.loads(index_path.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no weight_map")
        index = {name: self.path / file for name, file in weight_map.items()}
        for file in set(index.values()):
            if not file.is_file():
                raise CheckpointNotFoundError(f"{index_path} names {file.name}, which does not exist")
        return index

    def _open_bin(self) -> None:
        bin_path = self.path / TORCH_BIN_FILE
        if not bin_path.is_file():
            raise CheckpointNotFoundError(
                f"{self.path} has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX_FILE} nor {TORCH_BIN_FILE}"
            )
        state, _ = safe_torch_load(bin_path, [Format.STATE_DICT])
        if not isinstance(state, dict) or format_of_content(state, bin_path) is not Format.STATE_DICT:
            raise CheckpointError(f"{bin_path} is not a state dict of tensors")
        self._bin = state
        self.tensors = {name: TensorInfo(tuple(t.shape), t.dtype) for name, t in state.items()}
        self._releaser = _PageReleaser(bin_path)

    def read(self, name: str, rows: Rows = None) -> Tensor:
        if self._bin is not None:
            return _read_mapped(self._bin[name], rows, self._releaser)
        # A safe_open handle maps the file and keeps every page it touched resident until it closes:
        # opening one per read keeps resident memory at one chunk.
        with safe_open(self._file_of[name], framework="pt") as handle:
            view = handle.get_tensor(name) if rows is None else handle.get_slice(name)[rows[0] : rows[1]]
            out = _owned(view)
            del view
        return out

    def location(self, name: str) -> Path:
        return self._file_of.get(name, self.path / TORCH_BIN_FILE)

    def content_files(self) -> list[Path]:
        extra = [self.path / SAFETENSORS_INDEX_FILE] if (self.path / SAFETENSORS_INDEX_FILE).is_file() else []
        return [self.path / CONFIG_FILE, *extra, *self._files]

    def close(self) -> None:
        if self._bin is not None:
            self._bin.clear()


class SafetensorsFileReader(CheckpointReader):
    """A bare .safetensors state dict (HF names, or ``net.``-prefixed ones); no config of its own."""

    kind = Format.SAFETENSORS
    config_problem = "a bare safetensors file carries no model config"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tensors, self._stored = {}, {}
        with safe_open(path, framework="pt") as handle:
            for stored in handle.keys():  # noqa: SIM118
                piece = handle.get_slice(stored)
                name = stored.removeprefix(LIGHTNING_PREFIX)
                self.tensors[name] = TensorInfo(
                    tuple(piece.get_shape()), SAFETENSORS_DTYPES[piece.get_dtype()]
                )
                self._stored[name] = stored

    def read(self, name: str, rows: Rows = None) -> Tensor:
        with safe_open(self.path, framework="pt") as handle:
            stored = self._stored[name]
            view = handle.get_tensor(stored) if rows is None else handle.get_slice(stored)[rows[0] : rows[1]]
            out = _owned(view)
            del view
        return out


class TorchFileReader(CheckpointReader):
    """A ``torch.save`` file: a Lightning checkpoint of this project, a Composer checkpoint of FlexBERT or a
    bare state dict, told apart by content; opened memory-mapped with the safe loader."""

    def __init__(self, path: Path, formats: tuple[Format, ...]) -> None:
        self.path = path
        self._tokenizer_files: dict[str, bytes] = {}
        self._tokenizer_tmp: Path | None = None
        checkpoint, stood_in = safe_torch_load(path, formats)
        self.kind = format_of_content(checkpoint, path) if len(formats) > 1 else formats[0]
        exact, prefixes = ALLOWED[self.kind]
        foreign = sorted(n for n in stood_in if n not in exact and not n.startswith(prefixes))
        if foreign:
            raise UnsafeCheckpointError(
                f"refusing to load {path}: a {self.kind.value} checkpoint, but it pickles {', '.join(foreign)}"
            )
        self.raw = checkpoint
        if self.kind is Format.LIGHTNING:
            state = self._lightning(checkpoint)
        elif self.kind is Format.COMPOSER:
            state = self._composer(checkpoint)
        else:
            state = {k: v for k, v in checkpoint.items()}
            self.config_problem = "a bare state dict carries no model config"
        self._state = state
        self.tensors = {name: TensorInfo(tuple(t.shape), t.dtype) for name, t in state.items()}
        self._releaser = _PageReleaser(path)

    def _lightning(self, checkpoint: Any) -> dict[str, Tensor]:
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise CheckpointError(f"{self.path} has no 'state_dict': not a Lightning checkpoint")
        model_config = checkpoint.get("mmbert_config")
        if not isinstance(model_config, dict):
            self.config_problem = "has no 'mmbert_config' dict: not saved by this project's training (was it written by train.py?)"
        else:
            try:
                self.model_config = MmBertConfig(**model_config)
            except (TypeError, ValueError) as err:
                raise CheckpointError(
                    f"'mmbert_config' in {self.path} does not fit MmBertConfig: {err}"
                ) from err
        tokenizer = checkpoint.get("mmbert_tokenizer")
        self.tokenizer_source = tokenizer if isinstance(tokenizer, str) else None
        # Only the network's weights: anything else the module stored is not part of the model.
        state = {
            key.removeprefix(LIGHTNING_PREFIX): value
            for key, value in checkpoint["state_dict"].items()
            if key.startswith(LIGHTNING_PREFIX) and isinstance(value, Tensor)
        }
        if not state:
            raise CheckpointError(f"state_dict of {self.path} has no {LIGHTNING_PREFIX!r} tensors")
        return state

    def _composer(self, checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
        state = project_state(checkpoint["state"]["model"], str(self.path))
        self._tokenizer_files = composer_tokenizer_files(checkpoint)
        hf_config = composer_hf_config(checkpoint)
        if hf_config is None:
            self.config_problem = (
                "this Composer checkpoint carries no FlexBERT config (state['integrations']); give one "
                "(e.g. --config jhu-clsp/mmBERT-base for a base-sized checkpoint)"
            )
        else:
            self.model_config = config_from_flexbert(hf_config, source=f"{self.path} (FlexBERT config)")
        return state

    def read(self, name: str, rows: Rows = None) -> Tensor:
        return _read_mapped(self._state[name], rows, self._releaser)

    def tokenizer_dir(self) -> Path | None:
        """Composer keeps the tokenizer's files inside the checkpoint: they are written to a temporary folder
        that lives until :meth:`close`."""
        if not self._tokenizer_files:
            return super().tokenizer_dir()
        if self._tokenizer_tmp is None:
            self._tokenizer_tmp = Path(tempfile.mkdtemp(prefix="mmbert-composer-tokenizer-"))
            for name, data in self._tokenizer_files.items():
                (self._tokenizer_tmp / name).write_bytes(data)
        return self._tokenizer_tmp if find_tokenizer_files(self._tokenizer_tmp) else None

    def close(self) -> None:
        self._state.clear()
        if self._tokenizer_tmp is not None:
            shutil.rmtree(self._tokenizer_tmp, ignore_errors=True)
            self._tokenizer_tmp = None


def _read_mapped(tensor: Tensor, rows: Rows, releaser: _PageReleaser) -> Tensor:
    view = tensor if rows is None else tensor[rows[0] : rows[1]]
    out = _owned(view)
    releaser.release(view)
    return out


def open_reader(path: str | Path) -> CheckpointReader:
    """Open any local checkpoint for lazy reading: an HF folder, a Lightning ``.ckpt``, a Composer ``.pt``,
    a ``.safetensors`` file or a torch state dict (``.pt``/``.pth``/``.bin``)."""
    path = Path(path).expanduser()
    fmt = format_of_path(path)
    if fmt is Format.HF:
        return HfFolderReader(path)
    if fmt is Format.SAFETENSORS:
        return SafetensorsFileReader(path)
    if fmt is Format.LIGHTNING:
        return TorchFileReader(path, (Format.LIGHTNING,))
    return TorchFileReader(path, (Format.LIGHTNING, Format.COMPOSER, Format.STATE_DICT))


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
