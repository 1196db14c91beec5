"""Golden losses: a fixed 20-step tiny CPU run must reproduce the committed per-step train/loss.

The file is tests/golden/tiny_cpu_20_steps.json, written by scripts/make_golden_losses.py (which also holds the
run's overrides). A failure means the training numerics changed: if that is intended, regenerate the file and
say why in the same commit.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from helpers import REPO

SCRIPT = REPO / "scripts" / "make_golden_losses.py"
# Per-step relative tolerance. Measured: reruns, and 1, 2, 4 or 8 intra-op threads, differ by at most 1.2e-7;
# a real but small change of the numerics (norm_eps 1e-5 -> 1e-6) moves step 0 by 2.9e-5 and the run by up to
# 8.5e-5, which 1e-4 would let through.
RTOL = 1e-5
REGENERATE = (
    "If the change of the training numerics is intended, regenerate the file with\n"
    "    python scripts/make_golden_losses.py\n"
    "and explain the reason in the same commit."
)


def _script():
    spec = importlib.util.spec_from_file_location("make_golden_losses", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_golden_file_matches_the_script():
    golden = _script()
    record = json.loads(golden.GOLDEN.read_text())
    assert record["overrides"] == golden.OVERRIDES and record["steps"] == golden.STEPS, (
        f"{golden.GOLDEN} was made with other overrides than scripts/make_golden_losses.py has now. "
        + REGENERATE
    )
    assert len(record["losses"]) == golden.STEPS


def test_tiny_cpu_run_reproduces_the_golden_losses(tmp_path):
    golden = _script()
    record = json.loads(golden.GOLDEN.read_text())
    losses = golden.train_losses(tmp_path / "run")
    expected = record["losses"]
    rel = [abs(a - b) / abs(b) for a, b in zip(losses, expected, strict=True)]
    bad = [i for i, r in enumerate(rel) if not r <= RTOL]
    if bad:
        table = "\n".join(
            f"  step {i:2d}: golden {expected[i]:.7f}  now {losses[i]:.7f}  rel {rel[i]:.2e}" for i in bad
        )
        pytest.fail(
            f"train/loss differs from {golden.GOLDEN.relative_to(REPO)} (made with torch {record['torch']}, "
            f"now {torch.__version__}) beyond rtol {RTOL:g} at {len(bad)} of {len(rel)} steps:\n{table}\n"
            + REGENERATE
        )
