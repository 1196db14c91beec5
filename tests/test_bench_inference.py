"""bench/bench_inference.py at the tiny size on a few samples: its table, JSON, checks and exit status."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from mmbert.model.encode import _batches

SCRIPT = REPO / "bench" / "bench_inference.py"
# Seed 11 draws a short variable-8192 sample (2877 tokens).
TINY = [
    "--sizes",
    "tiny",
    "--samples",
    "1",
    "--seed",
    "11",
    "--cpu-batch-tokens",
    "8192",
    "--check-tokens",
    "512",
]


def _bench_inference():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports benchlib from its folder
    try:
        spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def _run(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "inference.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, json.loads(out.read_text()) if out.exists() else {}


def test_samples_and_batches_follow_the_protocol():
    bench = _bench_inference()
    variable = bench.make_samples("variable-512", 400, 1000, seed=0)
    lengths = [len(s) for s in variable]
    assert min(lengths) >= 16 and max(lengths) <= 512 and 230 < sum(lengths) / len(lengths) < 280
    assert all(int(s.min()) >= 5 and int(s.max()) < 1000 for s in variable)
    assert {len(s) for s in bench.make_samples("fixed-8192", 3, 1000, seed=0)} == {8192}
    # Packed: real tokens per batch, as mmbert.encode groups them; sorted: rows x the batch's longest. Longest
    # first, a sample over the budget alone. Input order: budget // longest rows per batch, in sample order.
    assert bench.plan_batches([5, 9, 3, 20, 4], 12, "packed") == [[3], [1], [0, 4, 2]]
    assert bench.plan_batches([5, 9, 3, 20, 4], 12, "sorted") == [[3], [1], [0, 4], [2]]
    assert bench.plan_batches([5, 9, 3, 20, 4], 40, "input", longest=20) == [[0, 1], [2, 3], [4]]
    assert bench.plan_batches(lengths, 2048, "packed") == _batches(lengths, 2048)
    with pytest.raises(ValueError, match="unknown batch order 'padded'"):
        bench.plan_batches(lengths, 2048, "padded")


def test_tiny_run_writes_the_table_and_the_checks(tmp_path):
    proc, report = _run(
        tmp_path,
        "--models", "mmbert", "transformers", "minilm",
        "--scenarios", "variable-512", "variable-8192",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = report["results"]
    assert set(results) == {
        "mmbert-tiny",
        "transformers-tiny",
        "transformers-tiny-sorted",
        "minilm",
        "minilm-sorted",
    }, "padded models run in input order (Figure 3's protocol) and sorted"
    for key in ("mmbert-tiny", "transformers-tiny", "transformers-tiny-sorted"):
        for scenario in ("variable-512", "variable-8192"):
            cell = results[key][scenario]
            assert cell["tokens_per_s"] > 0 and cell["complete"] and cell["samples"] == 1
            assert cell["batch_tokens"] == 8192
    assert results["minilm"]["variable-512"]["tokens_per_s"] > 0
    assert results["minilm"]["variable-8192"] is None, "512 positions: no 8192 scenario"
    # The same real tokens for every model.
    assert results["mmbert-tiny"]["variable-512"]["tokens"] == results["minilm"]["variable-512"]["tokens"]

    check = report["embedding_check"]["tiny"]
    assert check["ok"] and check["max_abs_diff"] <= 1e-4 and check["samples"] == 2
    memory = report["memory_check"]
    assert memory["mmbert-tiny"]["variable-8192"]["ok"] is True
    assert memory["mmbert-tiny"]["variable-8192"]["quadratic_outputs"] == []
    assert memory["transformers-tiny"]["variable-8192"]["quadratic_outputs"], (
        "transformers builds [L, L] masks"
    )
    assert report["failed_checks"] == []
    assert report["precision"] == {}, "fp32 run: nothing to compare against fp32"

    for how in ("input order", "sorted"):
        ratio = report["ratios"][f"mmBERT-tiny: encode / transformers (sdpa, {how})"]
        assert set(ratio) == {"variable-512", "variable-8192"} and all(v > 0 for v in ratio.values())
    goals = {g["goal"]: g for g in report["goals"]}
    for how in ("input order", "sorted"):
        goal = goals[f"CPU variable-512: mmBERT-tiny encode >= 2x transformers ModernBertModel ({how})"]
        assert goal["status"] == ("met" if goal["value"] >= 2 else "not met")
        assert goals[f"CPU variable-512: mmBERT-small encode >= 3x XLM-R base ({how})"]["status"] == (
            "n/a (not measured)"
        )
    goals = {text: g["status"] for text, g in goals.items()}
    assert any(status == "n/a (needs an H100)" for status in goals.values())

    out = proc.stdout
    for text in ("mmBERT-tiny (mmbert.encode)", "mmBERT-tiny (transformers, sdpa, input order)",
                 "mmBERT-tiny (transformers, sdpa, sorted)", "padded rows (input order)", "variable-8192",
                 "embedding check", "-> ok", "memory check", "goals:"):  # fmt: skip
        assert text in out, text
    minilm_row = next(line for line in out.splitlines() if line.startswith("multilingual MiniLM"))
    assert minilm_row.split()[-2] == "-"


def test_a_half_dtype_run_reports_how_far_embeddings_move_from_fp32(tmp_path, capsys):
    out = tmp_path / "inference.json"
    args = [*TINY, "--models", "mmbert", "transformers", "--scenarios", "variable-512", "--dtype", "bf16"]
    assert _bench_inference().main([*args, "--padded-orders", "input", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["setup"]["dtype"] == "bf16"
    assert set(report["precision"]) == {"mmbert-tiny", "transformers-tiny"}
    for figures in report["precision"].values():
        # bf16 keeps ~3 significant digits: the embeddings move, but stay pointing the same way.
        assert 0.999 < figures["min_cosine"] < 1.0 and 0 < figures["max_abs_diff"] < 0.1 * figures["mean_abs"]
        assert figures["samples"] == report["embedding_check"]["tiny"]["samples"] == 1
    assert report["embedding_check"]["tiny"]["ok"], "the fp32 check still runs before the cast"
    assert "bf16 against fp32" in capsys.readouterr().out
    # The CPU is named (figures differ between CPUs), and one without bf16 kernels is called out.
    from mmbert.model.encode import cpu_has_fast_kernels

    assert (
        report["device"].startswith("cpu (") and torch.backends.cpu.get_cpu_capability() in report["device"]
    )
    emulated = any("no bf16 matmul kernels" in note for note in report["notes"])
    assert emulated == (not cpu_has_fast_kernels(torch.bfloat16))


def test_a_failed_check_exits_non_zero_and_a_spent_budget_cuts_passes_short(tmp_path, capsys):
    out = tmp_path / "inference.json"
    args = [
        *TINY,
        "--models",
        "mmbert",
        "--scenarios",
        "variable-512",
        "--check-tol",
        "-1",
        "--json",
        str(out),
    ]
    args += ["--samples", "6", "--cpu-batch-tokens", "600", "--budget-s", "0", "--repeats", "2"]
    assert _bench_inference().main(args) == 1  # in this process: no second interpreter start-up
    captured = capsys.readouterr()
    assert "FAILED: embedding check mmBERT-tiny" in captured.err
    report = json.loads(out.read_text())
    assert report["embedding_check"]["tiny"]["ok"] is False and report["failed_checks"]
    assert list(report["results"]) == ["mmbert-tiny"]
    cell = report["results"]["mmbert-tiny"]["variable-512"]
    assert cell["passes"] == 2 and cell["batches"] == 1 < cell["batches_planned"] and not cell["complete"]
    assert "(partial: budget)" in captured.out


def test_the_cuda_batch_search_finds_the_largest_batch_that_fits():
    bench = _bench_inference()

    class Fits:
        """A model that runs out of memory above ``rows`` rows."""

        label, device = "fake", torch.device("cpu")

        def __init__(self, rows: int) -> None:
            self.rows, self.tried = rows, []

        def __call__(self, seqs, budget):
            self.tried.append(len(seqs))
            if len(seqs) > self.rows:
                raise torch.cuda.OutOfMemoryError("out of memory")

    fake = Fits(10)
    assert bench.largest_batch(fake, 512, 16384, 2**20, 100, None) == 10 * 512
    assert fake.tried[:3] == [32, 16, 8], "halving from the start until it fits, then up again"
    assert bench.largest_batch(Fits(10**6), 512, 16384, 2**16, 100, None) == 2**16, "stops at the cap"
    with pytest.raises(RuntimeError, match="one sample of 512 tokens does not fit"):
        bench.largest_batch(Fits(0), 512, 16384, 2**20, 100, None)
