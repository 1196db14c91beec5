"""Time and peak memory of a streamed TIES merge of mmBERT-base-sized checkpoints.

Writes a random base and three perturbed variants (307M parameters each: vocab 256000, hidden 768, 22 layers,
intermediate 1152, 12 heads) as safetensors Hugging Face folders in a temp dir, then merges them in a fresh
child process that reports its own wall time and peak RSS, next to a child that only imports the same
modules (the baseline). Temp files are removed at the end.

    python bench/bench_merge.py [--density 0.4] [--dtype float32] [--chunk-elements 4194304] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import SIZES
from transformers import ModernBertConfig, ModernBertForMaskedLM

from mmbert.merge.io import SafetensorsShardWriter, TensorInfo

BASE_ARCH = dict(
    SIZES["base"],
    global_attn_every_n_layers=3,
    local_attention=128,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)

# The child prints its own peak RSS, file pages mapped in included. VmHWM, not ru_maxrss: a forked child's
# ru_maxrss starts from the parent's, which has just written four models.
_CHILD = """
import json, sys, time
from mmbert.merge import run_merge
settings = json.loads(sys.argv[1])
start = time.perf_counter()
if settings:
    run_merge(settings)
seconds = time.perf_counter() - start
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_rss": peak}))
"""


def _shapes() -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = ModernBertForMaskedLM(ModernBertConfig(**BASE_ARCH))
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items() if name != "decoder.weight"]


def _write_model(folder: Path, shapes, dtype: torch.dtype, seed: int, base_seed: int | None) -> None:
    """A random model (or, with base_seed, that model plus small noise) written tensor by tensor."""
    folder.mkdir()
    ModernBertConfig(**BASE_ARCH).to_json_file(folder / "config.json")
    plan = [(name, TensorInfo(shape, dtype)) for name, shape in shapes]
    writer = SafetensorsShardWriter(folder, plan, shard_size=10**12)
    for i, (name, shape) in enumerate(shapes):
        origin = base_seed if base_seed is not None else seed
        tensor = torch.randn(shape, generator=torch.Generator().manual_seed(origin * 1000 + i))
        if base_seed is not None:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1000 + i))
            tensor.add_(noise, alpha=0.01)
        writer.write(name, tensor.to(dtype))
    writer.close()


def _child(settings: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(settings)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"merge child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--density", type=float, default=0.4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--chunk-elements", type=int, default=1 << 22)
    parser.add_argument("--tmpdir", default=None, help="where the ~5 model copies go (default: system temp)")
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    shapes = _shapes()
    params = sum(math.prod(s) for _, s in shapes)
    model_bytes = params * dtype.itemsize
    largest = max(math.prod(s) for _, s in shapes) * 4  # fp32 working copy of the largest tensor
    root = Path(tempfile.mkdtemp(prefix="bench_merge_", dir=args.tmpdir))
    try:
        start = time.perf_counter()
        _write_model(root / "base", shapes, dtype, seed=1, base_seed=None)
        for k in (2, 3, 4):
            _write_model(root / f"m{k}", shapes, dtype, seed=k, base_seed=1)
        took = time.perf_counter() - start
        print(f"wrote 4 models of {params / 1e6:.1f}M parameters ({args.dtype}) in {took:.0f}s")
        settings = {
            "method": "ties",
            "base": str(root / "base"),
            "models": [str(root / f"m{k}") for k in (2, 3, 4)],
            "weights": [1.0, 0.5, 0.8],
            "density": args.density,
            "lambda": 1.0,
            "output_dir": str(root / "merged"),
            "chunk_elements": args.chunk_elements,
        }
        baseline = _child({})
        result = _child(settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    gib = 2**30
    extra = result["peak_rss"] - baseline["peak_rss"]
    print(f"TIES merge of 3 models + base, density {args.density}, chunk {args.chunk_elements} entries")
    print(f"  time:              {result['seconds']:.1f} s (includes sha256 of all inputs)")
    print(f"  peak RSS:          {result['peak_rss'] / gib:.2f} GiB")
    print(f"  import baseline:   {baseline['peak_rss'] / gib:.2f} GiB")
    print(f"  model size:        {model_bytes / gib:.2f} GiB; largest tensor (fp32) {largest / gib:.2f} GiB")
    print(f"  peak RSS / model size:              {result['peak_rss'] / model_bytes:.2f}")
    print(f"  (peak - baseline) / model size:     {extra / model_bytes:.2f}")


if __name__ == "__main__":
    main()
