"""What the multi-stage drivers (toy_recipe.py, add_language_study.py) share: each stage is a ``python``
command run from the repository root, a failed one stops the driver with a message saying how to resume, and
a training run counts as finished once its ``hf/`` export is complete."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The files an hf/ export writes: all of them present means the export finished.
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class StageFailed(Exception):
    def __init__(self, stage: str, returncode: int) -> None:
        super().__init__(f"stage {stage} failed (exit code {returncode}); rerun the same command to resume")
        self.returncode = returncode


def header(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def exported(run_dir: Path) -> bool:
    return all((run_dir / "hf" / name).is_file() for name in HF_FILES)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # One intra-op thread: on a small or shared CPU, torch's threads waiting for each other at every op of
    # a model this small made training over ten times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def call(stage: str, args: list[str]) -> None:
    """``python *args`` from the repository root; StageFailed if it exits non-zero."""
    print("$", shlex.join(["python", *args]), flush=True)
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), check=False)
    if result.returncode != 0:
        raise StageFailed(stage, result.returncode)
