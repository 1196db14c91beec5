"""bench/gpu_check.py: refuses without a GPU, counts skipped tests as not run, and its whole plumbing runs on a
CPU at toy sizes; the inference step has its own budget and can be skipped."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from helpers import REPO

SCRIPT = str(REPO / "bench" / "gpu_check.py")


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_test_skipped_for_a_missing_package_counts_as_not_run(tmp_path):
    (tmp_path / "test_k.py").write_text(
        "import pytest\n"
        "def test_flash():\n    pytest.importorskip('no_such_kernel_package')\n"
        "def test_varlen():\n    assert True\n"
        "def test_auto():\n    assert False\n"
    )
    junit = tmp_path / "out.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "test_k.py"], cwd=tmp_path, capture_output=True)  # fmt: skip
    outcomes = _gpu_check().test_outcomes(junit)
    assert outcomes == {
        "test_k::test_flash": "not run: could not import 'no_such_kernel_package': No module named "
        "'no_such_kernel_package'",
        "test_k::test_varlen": "passed",
        "test_k::test_auto": "failed",
    }


def test_on_cuda_the_check_fails_unless_a_kernel_ran_and_matched_sdpa():
    gpu_check = _gpu_check()
    flash, varlen = gpu_check.KERNEL_TESTS.values()
    skipped = {flash: "not run: could not import 'flash_attn'", varlen: "failed"}
    with pytest.raises(
        gpu_check.StepFailed, match=r"no attention kernel ran.*flash-attn: not run.*varlen: failed"
    ):
        gpu_check.kernel_results(skipped, cuda=True)
    assert gpu_check.kernel_results(skipped, cuda=False)["flash-attn"].startswith("not run")
    one_ran = {flash: "not run: could not import 'flash_attn'", varlen: "passed"}
    assert gpu_check.kernel_results(one_ran, cuda=True) == {
        "flash-attn": "not run: could not import 'flash_attn'",
        "torch varlen": "passed",
    }


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
    assert [s["status"] for s in report["steps"].values()] == ["ok", "ok", "ok", "ok"]
    assert report["steps"]["train"]["figures"]["steps"] == 3
    assert "tiny@256" in report["steps"]["bench"]["figures"]
    inference = report["steps"]["inference"]["figures"]
    assert inference["results"]["mmbert-tiny"]["variable-8192"]["tokens_per_s"] > 0
    assert inference["embedding_check"]["tiny"]["ok"]
    tests = report["steps"]["gpu_tests"]["figures"]
    assert tests["summary"].startswith("0 passed, 0 failed, ") and len(tests["tests"]) >= 5
    assert set(tests["kernels"].values()) == {"not run: needs a CUDA device"}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| train | ok |" in table and "| torch varlen | not run: needs a CUDA device |" in table
    assert "| inference | ok |" in table and "| mmBERT-tiny (mmbert.encode) |" in table


@pytest.mark.slow
def test_a_failing_step_stops_the_check_and_is_named(tmp_path):
    (tmp_path / "bench_tiny_256.json").mkdir(parents=True)  # the benchmark cannot write its figures
    proc = subprocess.run([sys.executable, SCRIPT, "--cpu-smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 1 and "step 'bench' failed" in proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["steps"]) == ["gpu_tests", "bench"], "the train step never ran"


def test_the_inference_step_has_its_own_budget_and_can_be_skipped(tmp_path, monkeypatch):
    gpu_check = _gpu_check()
    ran = []
    for name in ("gpu_tests", "bench", "train", "inference"):
        monkeypatch.setattr(
            gpu_check, name, lambda out, seconds, smoke, name=name: ran.append((name, seconds)) or {}
        )
    assert gpu_check.main(["--cpu-smoke", "--skip-inference", "--out", str(tmp_path / "a")]) == 0
    assert [name for name, _ in ran] == ["gpu_tests", "bench", "train"]
    ran.clear()
    assert (
        gpu_check.main(
            ["--cpu-smoke", "--budget-s", "100", "--inference-budget-s", "99", "--out", str(tmp_path / "b")]
        )
        == 0
    )
    assert [name for name, _ in ran] == ["gpu_tests", "bench", "train", "inference"]
    assert [round(seconds) for _, seconds in ran] == [20, 55, 25, 99], "--budget-s is shared as before"


def test_the_report_tables_the_inference_figures():
    cell = {"tokens_per_s": 1234.4, "complete": True}
    figures = {
        "labels": {"mmbert-small": "mmBERT-small (mmbert.encode)", "xlmr": "XLM-R base (transformers, sdpa)"},
        "results": {"mmbert-small": {"fixed-512": cell, "fixed-8192": cell | {"complete": False}},
                    "xlmr": {"fixed-512": cell, "fixed-8192": None}},
        "ratios": {"mmBERT-small / XLM-R base": {"fixed-512": 1.0, "fixed-8192": None}},
        "embedding_check": {"small": {"max_abs_diff": 2e-7, "ok": True}},
        "goals": [{"goal": "GPU variable-512: ...", "status": "not met"}],
    }  # fmt: skip
    report = {"device": "H100", "started": "now", "steps": {"inference": {"status": "ok", "seconds": 1.0,
                                                                           "figures": figures}}}  # fmt: skip
    table = _gpu_check()._table(report)
    assert "| inference tokens/s | fixed-512 | fixed-8192 |" in table
    assert "| mmBERT-small (mmbert.encode) | 1,234 | 1,234 (partial) |" in table
    assert "| XLM-R base (transformers, sdpa) | 1,234 | - |" in table
    assert "| mmBERT-small / XLM-R base | 1.00x | - |" in table
    assert "small 2.0e-07" in table and "- [not met] GPU variable-512: ..." in table
