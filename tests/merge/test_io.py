"""Merge I/O: the streaming safetensors writer, safetensors folder reading, staging, page release."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mmbert.checkpoint import HfFolderReader
from mmbert.checkpoint.readers import _PageReleaser
from mmbert.errors import CheckpointError, MergeError
from mmbert.merge.io import SafetensorsShardWriter, TensorInfo, sha256_file, staged_directory


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(10, 7, generator=gen),
        "b.bias": torch.randn(13, generator=gen).to(torch.bfloat16),
        "c.steps": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d.mask": torch.tensor([True, False, True]),
        "e.scale": torch.tensor(2.5, dtype=torch.float16),
    }


def _write(folder: Path, tensors: dict[str, torch.Tensor], shard_size: int, rows: int) -> list[str]:
    plan = [(name, TensorInfo(tuple(t.shape), t.dtype)) for name, t in tensors.items()]
    writer = SafetensorsShardWriter(folder, plan, shard_size)
    for name, t in tensors.items():
        if t.dim() == 0:
            writer.write(name, t)
        else:
            for piece in torch.split(t, rows):
                writer.write(name, piece)
    return writer.close()


def test_writer_single_file_round_trip(tmp_path):
    tensors = _tensors()
    assert _write(tmp_path, tensors, shard_size=10**9, rows=3) == ["model.safetensors"]
    with safe_open(tmp_path / "model.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    loaded = load_file(tmp_path / "model.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name


def test_writer_shards_with_index(tmp_path):
    tensors = _tensors()
    files = _write(tmp_path, tensors, shard_size=100, rows=4)
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    assert files == [first, second, "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    # a.weight (280 B) exceeds the shard size and gets a shard alone; the small rest (79 B) packs together.
    rest = dict.fromkeys(["b.bias", "c.steps", "d.mask", "e.scale"], second)
    assert index["weight_map"] == {"a.weight": first, **rest}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert set(index["weight_map"]) == set(tensors)
    for name, t in tensors.items():
        assert torch.equal(load_file(tmp_path / index["weight_map"][name])[name], t), name
    reader = HfFolderReader(_with_config(tmp_path))
    assert torch.equal(reader.read("a.weight", (2, 5)), tensors["a.weight"][2:5])
    assert reader.read("b.bias").dtype == torch.float32
    assert reader.read("c.steps").dtype == torch.int64


def _with_config(folder: Path) -> Path:
    (folder / "config.json").write_text(json.dumps({"model_type": "toy"}))
    return folder


def test_writer_refuses_out_of_plan_writes(tmp_path):
    plan = [("x", TensorInfo((2, 2), torch.float32)), ("y", TensorInfo((3,), torch.float32))]
    writer = SafetensorsShardWriter(tmp_path, plan, 10**6)
    with pytest.raises(RuntimeError, match="plan expects 'x'"):
        writer.write("y", torch.zeros(3))
    writer = SafetensorsShardWriter(tmp_path, plan, 10**6)
    with pytest.raises(RuntimeError, match=re.escape("planned torch.float32")):
        writer.write("x", torch.zeros(2, 2, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="too many bytes"):
        writer.write("x", torch.zeros(3, 2))
    writer.write("x", torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="before 'x' is complete"):
        writer.write("y", torch.zeros(3))
    writer.write("x", torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="'y' was planned but not fully written"):
        writer.close()


def test_hf_reader_errors(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape("without config.json")):
        HfFolderReader(tmp_path)
    _with_config(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape("neither model.safetensors nor")):
        HfFolderReader(tmp_path)
    save_file({"w": torch.zeros(2)}, tmp_path / "part.safetensors")
    index = {"weight_map": {"w": "part.safetensors", "v": "part.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=re.escape("tensor 'v' in part.safetensors")):
        HfFolderReader(tmp_path)


def test_staged_directory_commits_and_cleans_up(tmp_path):
    out = tmp_path / "sub" / "out"
    with staged_directory(out, overwrite=False) as stage:
        (stage / "f.txt").write_text("one")
        assert not out.exists()
    assert (out / "f.txt").read_text() == "one"
    with pytest.raises(MergeError, match="already exists"), staged_directory(out, overwrite=False):
        pass
    with pytest.raises(KeyError), staged_directory(out, overwrite=True) as stage:
        (stage / "f.txt").write_text("two")
        raise KeyError("boom")
    assert (out / "f.txt").read_text() == "one"
    with staged_directory(out, overwrite=True) as stage:
        (stage / "g.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["g.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no staging or retired folders


def test_sha256_streams_whole_file(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    seen = []
    assert sha256_file(tmp_path / "f", seen.append, block=4096) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_page_release_keeps_mmap_resident_memory_flat_and_values_intact(tmp_path):
    path = tmp_path / "big.ckpt"
    big = torch.randn(1024, 8192)  # 32 MiB
    torch.save({"state_dict": {"net.w": big}}, path)
    loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]["net.w"]
    releaser = _PageReleaser(path)
    before = _rss_file_kb()
    for start in range(0, 1024, 32):  # 1 MiB chunks
        view = loaded[start : start + 32]
        assert torch.equal(view.clone(), big[start : start + 32])
        releaser.release(view)
    assert _rss_file_kb() - before < 8 * 1024
    assert torch.equal(loaded, big)  # released pages come back from the file


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_hf_reader_keeps_resident_memory_flat(tmp_path):
    big = torch.randn(1024, 8192)
    save_file({"w": big}, tmp_path / "model.safetensors")
    reader = HfFolderReader(_with_config(tmp_path))
    before = _rss_file_kb()
    for start in range(0, 1024, 32):
        assert torch.equal(reader.read("w", (start, start + 32)), big[start : start + 32])
    assert _rss_file_kb() - before < 8 * 1024
