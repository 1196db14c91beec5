"""MosaicML Streaming (MDS) shards, read and written without ``mosaicml-streaming``.

That library pins versions our stack cannot use, so this module implements the part of its format that the
released mmBERT data uses (format version 2):

- ``index.json``: ``{"version": 2, "shards": [{"format": "mds", "column_names", "column_encodings",
  "column_sizes", "compression", "raw_data": {"basename", "bytes"}, "zip_data", "samples", ...}]}``; a merged
  root index names shards by paths relative to its folder (``chunk/shard.00000.mds``);
- a shard: ``uint32 n``, ``uint32 offsets[n + 1]`` (absolute), the writer's JSON config, then the samples;
  a sample is one ``uint32`` size per variable-size column, then the column values back to back (columns in
  the index's order, which writers sort by name);
- compression ``zstd`` (``shard.00000.mds.zstd`` = a zstd frame of the raw shard).

mmBERT's shards hold ``input_ids`` (``ndarray:uint32`` or ``ndarray``) and ``id`` (``str``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from mmbert.errors import DataError

_SCALARS = {
    "uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "int8": "<i1", "int16": "<i2",
    "int32": "<i4", "int64": "<i8", "float16": "<f2", "float32": "<f4", "float64": "<f8", "int": "<i8",
}  # fmt: skip
# NDArray's dtype codes (streaming.base.format.mds.encodings.NDArray).
_NDARRAY_DTYPES = {
    8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 18: "float16", 32: "uint32", 33: "int32",
    34: "float32", 64: "uint64", 65: "int64", 66: "float64",
}  # fmt: skip
_NDARRAY_CODES = {v: k for k, v in _NDARRAY_DTYPES.items()}
_SHAPE_DTYPES = ("uint8", "uint16", "uint32", "uint64")


def _ndarray_spec(encoding: str) -> tuple[str | None, tuple[int, ...] | None]:
    parts = encoding.split(":")
    dtype = parts[1] if len(parts) > 1 and parts[1] else None
    shape = tuple(int(d) for d in parts[2].split(",")) if len(parts) > 2 else None
    return dtype, shape


def _fixed_size(encoding: str) -> int | None:
    if encoding in _SCALARS:
        return np.dtype(_SCALARS[encoding]).itemsize
    if encoding.startswith("ndarray"):
        dtype, shape = _ndarray_spec(encoding)
        if dtype is not None and shape is not None:
            return int(np.prod(shape)) * np.dtype(dtype).itemsize
    return None


def decode_value(encoding: str, data: bytes | memoryview) -> Any:
    if encoding == "str":
        return bytes(data).decode("utf-8")
    if encoding == "bytes":
        return bytes(data)
    if encoding == "json":
        return json.loads(bytes(data))
    if encoding in _SCALARS:
        return np.frombuffer(data, _SCALARS[encoding])[0].item()
    if encoding.startswith("ndarray"):
        dtype, shape = _ndarray_spec(encoding)
        i = 0
        if dtype is None:
            dtype = _NDARRAY_DTYPES[data[0]]
            i = 1
        if shape is None:
            ndim, shape_code = data[i] >> 2, data[i] & 3
            width = 1 << shape_code
            dims = np.frombuffer(data[i + 1 : i + 1 + ndim * width], _SHAPE_DTYPES[shape_code])
            shape = tuple(dims.tolist())
            i += 1 + ndim * width
        return np.frombuffer(data[i:], dtype).reshape(shape)
    raise DataError(f"unsupported MDS column encoding {encoding!r}")


def encode_value(encoding: str, value: Any) -> bytes:
    if encoding == "str":
        return value.encode("utf-8")
    if encoding == "bytes":
        return bytes(value)
    if encoding == "json":
        return json.dumps(value).encode("utf-8")
    if encoding in _SCALARS:
        return np.asarray(value, _SCALARS[encoding]).tobytes()
    if encoding.startswith("ndarray"):
        arr = np.asarray(value)
        dtype, shape = _ndarray_spec(encoding)
        head = b""
        if dtype is None:
            head += bytes([_NDARRAY_CODES[arr.dtype.name]])
        elif arr.dtype != np.dtype(dtype):
            raise DataError(f"MDS column {encoding!r} got an array of dtype {arr.dtype}")
        if shape is None:
            code = next(c for c, name in enumerate(_SHAPE_DTYPES) if max(arr.shape) < 1 << (8 << c))
            head += bytes([(arr.ndim << 2) | code]) + np.asarray(arr.shape, _SHAPE_DTYPES[code]).tobytes()
        return head + arr.tobytes()
    raise DataError(f"unsupported MDS column encoding {encoding!r}")


@dataclass(frozen=True)
class MdsShard:
    path: Path
    compression: str | None
    samples: int
    column_names: tuple[str, ...]
    column_encodings: tuple[str, ...]
    column_sizes: tuple[int | None, ...]


def read_index(index_path: Path) -> list[MdsShard]:
    """The shards listed by one ``index.json``; their paths are relative to its folder."""
    try:
        obj = json.loads(index_path.read_text())
        shards = []
        for s in obj["shards"]:
            if s.get("format") != "mds" or s.get("version", 2) != 2:
                raise DataError(f"{index_path}: only MDS version 2 shards are supported")
            info = s["zip_data"] or s["raw_data"]
            shards.append(
                MdsShard(
                    path=index_path.parent / info["basename"],
                    compression=s["compression"] if s["zip_data"] else None,
                    samples=int(s["samples"]),
                    column_names=tuple(s["column_names"]),
                    column_encodings=tuple(s["column_encodings"]),
                    column_sizes=tuple(s["column_sizes"]),
                )
            )
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{index_path}: not a readable MDS index ({type(e).__name__}: {e})") from e
    return shards


def find_shards(root: Path) -> list[MdsShard]:
    """All shards under ``root`` from the leaf ``index.json`` files (those beside their shard files).

    Merged indexes higher up are not needed (``streaming``'s ``merge_index`` keeps only one folder level of
    the shard paths), so nested trees are read from their leaves.
    """
    shards: list[MdsShard] = []
    for index_path in sorted(root.rglob("index.json")):
        listed = read_index(index_path)
        if listed and all(s.path.parent == index_path.parent for s in listed):
            shards.extend(listed)
    return shards


class ShardReader:
    """Random access to the samples of one shard (the whole shard is loaded; shards are ~64 MB)."""

    def __init__(self, shard: MdsShard) -> None:
        self.shard = shard
        try:
            data = shard.path.read_bytes()
            if shard.compression is not None:
                if not shard.compression.startswith("zstd"):
                    raise DataError(f"{shard.path}: unsupported MDS compression {shard.compression!r}")
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            n = int(np.frombuffer(data[:4], "<u4")[0])
            self.offsets = np.frombuffer(data[4 : 8 + 4 * n], "<u4")
            if n != shard.samples or int(self.offsets[-1]) != len(data):
                raise DataError(f"{shard.path}: corrupt MDS shard ({n} samples, index says {shard.samples})")
        except DataError:
            raise
        except (OSError, ValueError, zstandard.ZstdError) as e:
            raise DataError(f"{shard.path}: unreadable MDS shard ({type(e).__name__}: {e})") from e
        self.data = memoryview(data)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> memoryview:
        return self.data[int(self.offsets[i]) : int(self.offsets[i + 1])]


def read_column(s: MdsShard, raw: memoryview, name: str) -> Any:
    """Column ``name`` of one raw sample of shard ``s``."""
    sizes: list[int] = []
    pos = 0
    for size in s.column_sizes:
        if size is None:
            size = int(np.frombuffer(raw[pos : pos + 4], "<u4")[0])
            pos += 4
        sizes.append(size)
    for col, enc, size in zip(s.column_names, s.column_encodings, sizes, strict=True):
        if col == name:
            return decode_value(enc, raw[pos : pos + size])
        pos += size
    raise DataError(f"{s.path}: no MDS column {name!r} (columns: {list(s.column_names)})")


class MdsWriter:
    """Writes one folder of MDS shards plus its ``index.json`` (test fixtures and conversions)."""

    def __init__(
        self, out: Path, columns: dict[str, str], size_limit: int = 1 << 26, compression: str | None = None
    ) -> None:
        if compression not in (None, "zstd"):
            raise DataError(f"MdsWriter: unsupported compression {compression!r} (None or 'zstd')")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.names = sorted(columns)
        self.encodings = [columns[c] for c in self.names]
        self.sizes = [_fixed_size(e) for e in self.encodings]
        self.size_limit = size_limit
        self.compression = compression
        config = {
            "column_encodings": self.encodings, "column_names": self.names, "column_sizes": self.sizes,
            "compression": compression, "format": "mds", "hashes": [], "size_limit": size_limit, "version": 2,
        }  # fmt: skip
        self.config_bytes = json.dumps(config, sort_keys=True).encode("utf-8")
        self.samples: list[bytes] = []
        self.pending_bytes = 0
        self.shards: list[dict[str, Any]] = []

    def write(self, sample: dict[str, Any]) -> None:
        head, body = [], []
        for name, enc, size in zip(self.names, self.encodings, self.sizes, strict=True):
            value = encode_value(enc, sample[name])
            if size is None:
                head.append(len(value))
            body.append(value)
        data = np.asarray(head, "<u4").tobytes() + b"".join(body)
        if self.samples and self.pending_bytes + len(data) + 4 > self.size_limit:
            self._flush()
        self.samples.append(data)
        self.pending_bytes += len(data) + 4

    def _flush(self) -> None:
        n = len(self.samples)
        start = 4 + 4 * (n + 1) + len(self.config_bytes)
        offsets = np.cumsum([start, *map(len, self.samples)]).astype("<u4")
        raw = np.uint32(n).tobytes() + offsets.tobytes() + self.config_bytes + b"".join(self.samples)
        basename = f"shard.{len(self.shards):05d}.mds"
        entry: dict[str, Any] = {
            "column_encodings": self.encodings, "column_names": self.names, "column_sizes": self.sizes,
            "compression": self.compression, "format": "mds", "hashes": [], "size_limit": self.size_limit,
            "version": 2, "samples": n, "raw_data": {"basename": basename, "bytes": len(raw), "hashes": {}},
            "zip_data": None,
        }  # fmt: skip
        if self.compression == "zstd":
            packed = zstandard.ZstdCompressor().compress(raw)
            entry["zip_data"] = {"basename": basename + ".zstd", "bytes": len(packed), "hashes": {}}
            (self.out / (basename + ".zstd")).write_bytes(packed)
        else:
            (self.out / basename).write_bytes(raw)
        self.shards.append(entry)
        self.samples, self.pending_bytes = [], 0

    def finish(self) -> None:
        if self.samples:
            self._flush()
        index = {"shards": self.shards, "version": 2}
        (self.out / "index.json").write_text(json.dumps(index, sort_keys=True))

    def __enter__(self) -> MdsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def merge_index(root: Path) -> None:
    """One ``index.json`` at ``root`` listing every leaf index's shards by their path relative to ``root``."""
    shards = []
    for shard_index in sorted(root.rglob("index.json")):
        if shard_index.parent == root:
            continue
        rel = shard_index.parent.relative_to(root).as_posix()
        for s in json.loads(shard_index.read_text())["shards"]:
            for key in ("raw_data", "zip_data"):
                if s.get(key):
                    s[key]["basename"] = f"{rel}/{s[key]['basename']}"
            shards.append(s)
    (root / "index.json").write_text(json.dumps({"shards": shards, "version": 2}, sort_keys=True))


def iter_token_arrays(shard: MdsShard, column: str = "input_ids") -> Iterator[np.ndarray]:
    reader = ShardReader(shard)
    for i in range(len(reader)):
        yield read_column(shard, reader.raw(i), column)
