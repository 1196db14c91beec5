"""bench/gpu_check.py: refuses without a GPU, and its whole plumbing runs on a CPU at toy sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import REPO

SCRIPT = str(REPO / "bench" / "gpu_check.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_refuses_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_writes_the_report(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--cpu-smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in report["steps"].values()] == ["ok", "ok", "ok"]
    assert report["steps"]["train"]["figures"]["steps"] == 3
    assert "tiny@256" in report["steps"]["bench"]["figures"]
    assert "| train | ok |" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_a_failing_step_stops_the_check_and_is_named(tmp_path):
    (tmp_path / "bench_tiny_256.json").mkdir(parents=True)  # the benchmark cannot write its figures
    proc = subprocess.run([sys.executable, SCRIPT, "--cpu-smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 1 and "step 'bench' failed" in proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["steps"]) == ["gpu_tests", "bench"], "the train step never ran"
