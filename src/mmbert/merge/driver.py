"""The merge driver: checks inputs against each other, then streams the merge tensor by tensor.

Large tensors are read, merged and written in row chunks of `chunk_elements` entries per input, so peak
memory is a few chunks per input whatever the model size; the method (`methods`) merges each tensor from
those chunks (TIES first finds each task vector's magnitude threshold in two streamed passes).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import mmbert
from mmbert.checkpoint import CONFIG_FILE, TIED_KEY
from mmbert.errors import MergeError
from mmbert.merge.config import MergeConfig, MergeSpec
from mmbert.merge.io import (
    CheckpointReader,
    Rows,
    SafetensorsShardWriter,
    TensorInfo,
    copy_tokenizer_files,
    open_checkpoint,
    sha256_file,
    staged_directory,
)

__all__ = ["run_merge"]

log = logging.getLogger(__name__)

# Config fields that must agree for tensors to line up; vocab_size is checked first for a clearer message.
ARCH_KEYS = ("vocab_size", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers")
ARCH_KEYS += ("num_attention_heads", "tie_word_embeddings")
_CONFIG_DEFAULTS = {"tie_word_embeddings": True}  # transformers' default when config.json omits it


def run_merge(config: MergeConfig | Mapping[str, Any]) -> Path:
    """Merge checkpoints as configured and write a Hugging Face folder to `output_dir`; returns it.

    Nothing is created before the settings, the output folder and all inputs' configs, tensor names
    and shapes have been checked. The result is assembled in a hidden folder beside `output_dir` and
    renamed into place at the end, so an error (e.g. NaN found mid-way) leaves no partial output.
    """
    if not isinstance(config, MergeConfig):
        config = MergeConfig.from_mapping(config)
    spec = config.resolve()
    _check_paths(spec)
    readers: list[CheckpointReader] = []
    try:
        for path in spec.inputs:
            readers.append(open_checkpoint(path))
        plan = plan_tensors(readers, spec.dtype)
        hashes = _hash_inputs(readers)
        with staged_directory(spec.output_dir, spec.overwrite) as stage:
            files = _write_weights(stage, readers, plan, spec)
            _write_config(stage, readers[0], spec.dtype)
            tokenizer = _copy_tokenizer(stage, readers)
            _write_record(stage, spec, readers, hashes, tokenizer, files)
    finally:
        for reader in readers:
            reader.close()
    log.info("merged %d checkpoints (%s) into %s", len(spec.models), spec.method.name, spec.output_dir)
    return spec.output_dir


def _check_paths(spec: MergeSpec) -> None:
    out = spec.output_dir.resolve()
    for path in spec.inputs:
        if path.resolve() == out or out in path.resolve().parents:
            raise MergeError(f"output_dir {spec.output_dir} would replace input {path}")
    if spec.output_dir.exists() and not spec.overwrite:
        raise MergeError(f"output_dir {spec.output_dir} already exists; set overwrite=true to replace it")


def plan_tensors(
    readers: Sequence[CheckpointReader], dtype: torch.dtype | None
) -> list[tuple[str, TensorInfo]]:
    """Check that all inputs hold the same architecture and tensors; return what to write, in order.

    The first reader is the reference: its tensor order and (unless `dtype` is set) its float dtypes
    carry over. A tied decoder weight is left out: the loader re-ties it to the embedding.
    """
    ref = readers[0]
    for reader in readers[1:]:
        for key in ARCH_KEYS:
            mine = ref.config.get(key, _CONFIG_DEFAULTS.get(key))
            theirs = reader.config.get(key, _CONFIG_DEFAULTS.get(key))
            if mine != theirs:
                what = "different vocab sizes" if key == "vocab_size" else f"different architectures ({key})"
                raise MergeError(f"{what}: {ref.path} has {key}={mine}, {reader.path} has {key}={theirs}")
    skip = {TIED_KEY} if ref.config.get("tie_word_embeddings", True) else set()
    names = [name for name in ref.tensors if name not in skip]
    for reader in readers[1:]:
        missing = [name for name in names if name not in reader.tensors]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise MergeError(f"tensor {missing[0]!r} is missing from {reader.path}{more}")
        extra = [name for name in reader.tensors if name not in skip and name not in ref.tensors]
        if extra:
            raise MergeError(f"unexpected tensor {extra[0]!r} in {reader.path}: not in {ref.path}")
    plan = []
    for name in names:
        info = ref.tensors[name]
        for reader in readers[1:]:
            other = reader.tensors[name]
            if other.shape != info.shape:
                raise MergeError(
                    f"tensor {name!r} has shape {list(info.shape)} in {ref.path} "
                    f"but {list(other.shape)} in {reader.path}"
                )
            if other.dtype.is_floating_point != info.dtype.is_floating_point:
                raise MergeError(
                    f"tensor {name!r} is {info.dtype} in {ref.path} but {other.dtype} in {reader.path}"
                )
        out_dtype = dtype if dtype is not None and info.dtype.is_floating_point else info.dtype
        plan.append((name, TensorInfo(info.shape, out_dtype)))
    return plan


def row_chunks(shape: tuple[int, ...], chunk_elements: int) -> list[Rows]:
    """Row ranges along dim 0 of at most `chunk_elements` entries each (at least one row)."""
    if not shape:
        return [None]
    row = math.prod(shape[1:])
    step = max(1, chunk_elements // max(row, 1))
    return [(start, min(start + step, shape[0])) for start in range(0, shape[0], step)] or [(0, 0)]


class _TensorInputs:
    """One tensor of every input (the `methods.TensorChunks` a method merges), checked for NaN/inf; cached
    when a single chunk covers it.

    TIES reads each chunk three times (two threshold passes and the merge); a tensor that fits in one
    chunk is read once instead.
    """

    def __init__(
        self, readers: Sequence[CheckpointReader], name: str, info: TensorInfo, spec: MergeSpec
    ) -> None:
        self.readers = readers
        self.name = name
        self.rows = row_chunks(info.shape, spec.chunk_elements)
        self.numel = info.numel
        self.n_models = len(spec.models)
        self._first_model = len(readers) - self.n_models  # the base, if any, is reader 0
        self._cache: dict[int, Tensor] | None = {} if len(self.rows) == 1 else None

    def base(self, rows: Rows) -> Tensor:
        return self._read(0, rows)

    def model(self, index: int, rows: Rows) -> Tensor:
        return self._read(self._first_model + index, rows)

    def _read(self, index: int, rows: Rows) -> Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        reader = self.readers[index]
        chunk = reader.read(self.name, rows)
        if not bool(torch.isfinite(chunk).all()):
            raise MergeError(f"tensor {self.name!r} in {reader.location(self.name)} contains NaN or inf")
        if self._cache is not None:
            self._cache[index] = chunk
        return chunk


def _merge_float(
    name: str, info: TensorInfo, readers: Sequence[CheckpointReader], spec: MergeSpec, write: Callable
) -> None:
    weights = torch.tensor(spec.weights, dtype=torch.float32)
    for merged in spec.method.combine(_TensorInputs(readers, name, info, spec), weights):
        write(name, merged.to(info.dtype))


def _copy_exact(name: str, readers: Sequence[CheckpointReader], write: Callable) -> None:
    # Integer/bool buffers are not averaged: every input must agree and the value is copied.
    ref = readers[0].read(name)
    for reader in readers[1:]:
        if not torch.equal(ref, reader.read(name)):
            raise MergeError(f"non-float tensor {name!r} differs between {readers[0].path} and {reader.path}")
    write(name, ref)


def _write_weights(
    folder: Path, readers: Sequence[CheckpointReader], plan: list[tuple[str, TensorInfo]], spec: MergeSpec
) -> list[str]:
    writer = SafetensorsShardWriter(folder, plan, spec.shard_size)
    try:
        for name, info in tqdm(plan, desc=f"merge ({spec.method.name})", unit="tensor"):
            if info.dtype.is_floating_point:
                _merge_float(name, info, readers, spec, writer.write)
            else:
                _copy_exact(name, readers, writer.write)
        return writer.close()
    finally:
        writer.abort()


def _hash_inputs(readers: Sequence[CheckpointReader]) -> list[dict[str, str]]:
    files = [reader.content_files() for reader in readers]
    total = sum(f.stat().st_size for group in files for f in group)
    with tqdm(total=total, desc="hash inputs", unit="B", unit_scale=True) as bar:
        return [{f.name: sha256_file(f, bar.update) for f in group} for group in files]


def _write_config(folder: Path, ref: CheckpointReader, dtype: torch.dtype | None) -> None:
    if dtype is None and ref.kind == "hf":
        shutil.copyfile(ref.path / CONFIG_FILE, folder / CONFIG_FILE)
        return
    config = dict(ref.config)
    if dtype is not None:
        config.pop("torch_dtype", None)  # pre-5.0 transformers' name for the same field
        config["dtype"] = str(dtype).removeprefix("torch.")
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _copy_tokenizer(folder: Path, readers: Sequence[CheckpointReader]) -> dict[str, Any] | None:
    for reader in readers:
        source = reader.tokenizer_dir()
        if source is not None:
            return {"source": str(source), "files": copy_tokenizer_files(source, folder)}
    log.warning("no input has local tokenizer files; the merged folder has no tokenizer")
    return None


def _write_record(
    folder: Path,
    spec: MergeSpec,
    readers: Sequence[CheckpointReader],
    hashes: list[dict[str, str]],
    tokenizer: dict[str, Any] | None,
    files: list[str],
) -> None:
    entries = [
        {"path": str(reader.path.resolve()), "format": reader.kind, "sha256": digest}
        for reader, digest in zip(readers, hashes, strict=True)
    ]
    record = {
        "method": spec.method.name,
        "parameters": spec.parameters(),
        "dtype": str(spec.dtype).removeprefix("torch.") if spec.dtype is not None else None,
        "base": entries[0] if spec.base is not None else None,
        "models": entries[1:] if spec.base is not None else entries,
        "config_from": str(readers[0].path.resolve()),
        "tokenizer": tokenizer,
        "files": files,
        "mmbert_version": mmbert.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
