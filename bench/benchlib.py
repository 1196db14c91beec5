"""What the model benchmarks share: the model sizes they run at and their first options.

The scripts import it as ``benchlib``: ``python bench/<script>.py`` puts bench/ first on sys.path.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

# What mmBERT-small and -base share around their widths (conf/model/common/mmbert.yaml).
_MMBERT = dict(vocab_size=256000, intermediate_size=1152, num_hidden_layers=22)
# Model dimensions by --size; tiny is conf/model/tiny.yaml's model (the sample tokenizer's vocabulary).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        vocab_size=8192, hidden_size=128, intermediate_size=256, num_hidden_layers=6, num_attention_heads=2
    ),
    "small": dict(_MMBERT, hidden_size=384, num_attention_heads=6),
    "base": dict(_MMBERT, hidden_size=768, num_attention_heads=12),
}


def bench_parser(
    description: str,
    sizes: bool = True,
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    dtype_help: str = "bf16 = autocast",
) -> argparse.ArgumentParser:
    """A parser with --size (when the benchmark picks one of SIZES), --device and --dtype (one of ``dtypes``)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if sizes:
        parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=dtypes, default="fp32", help=dtype_help)
    return parser


def cpu_name() -> str:
    """The CPU's model name and the vector extensions torch dispatches to (figures differ between CPUs)."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"
