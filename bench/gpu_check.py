"""One command for a GPU machine: the gpu tests, the training-step benchmark, a real-vocabulary train run and the
inference benchmark.

    python bench/gpu_check.py [--out gpu_check] [--budget-s 480] [--inference-budget-s 480] [--skip-inference]

Steps, in order, each in its own process with its own time limit, stopping at the first that fails:

1. ``pytest -m gpu`` (flash-attn / torch varlen against SDPA in bf16, auto backend selection). A test skipped
   for a missing package or device counts as not run, and on a CUDA machine the step fails unless at least
   one attention kernel (flash-attn or torch's varlen) ran and matched SDPA;
2. ``bench/bench_model.py`` in bf16 at 1024 and 8192 tokens for small and base: the project against
   transformers' ``ModernBertForMaskedLM`` on the same documents (tokens/s, MFU, peak step memory);
3. a 50-step ``train.py model=small trainer=gpu`` run at the real 256k vocabulary, on pre-tokenized MDS shards
   this script writes from the sample corpus (a GPU machine may have no hub access; the sample tokenizer's
   ids are a subset of the vocabulary, so the embedding and MLM head have their real size);
4. ``bench/bench_inference.py`` at full size (the paper's Figure 3: 8,192 samples of every scenario, bf16, each
   model at the largest batch that fits), within ``--inference-budget-s`` (its own time, on top of
   ``--budget-s``; cells it cannot finish are timed on part of their batches and marked partial), with its
   embedding and memory checks; ``--skip-inference`` leaves it out.

Writes ``OUT/gpu_check.json`` (every step's status, seconds and figures) and ``OUT/gpu_check.md`` (a table
for the README), also after a failure, which it names; exits non-zero if any step failed.
``--cpu-smoke`` runs the same plumbing on a CPU at toy sizes (what the slow test does).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_CASES = [("small", 1024), ("small", 8192), ("base", 1024), ("base", 8192)]
# Real tokens per benchmark step: one device's micro-batch of the recipe (rows_per_device x row length).
BATCH_TOKENS = {"small": 65536, "base": 32768}
TRAIN_STEPS = 50
# The kernels the GPU check exists for (JUnit names): each test runs one against SDPA in bf16.
KERNEL_TESTS = {
    "flash-attn": "tests.model.test_attention::test_gpu_flash_matches_sdpa_bf16",
    "torch varlen": "tests.model.test_attention::test_gpu_varlen_matches_sdpa_bf16",
}


class StepFailed(RuntimeError):
    pass


def _run(cmd: list[str], timeout: float, log: Path) -> None:
    """Runs one step's command, its output in ``log``; raises StepFailed with the log's tail on failure."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired as e:
            raise StepFailed(f"timed out after {timeout:.0f} s (log: {log})") from e
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StepFailed(f"exit status {proc.returncode} (log: {log}):\n{tail}")


def test_outcomes(junit: Path) -> dict[str, str]:
    """Each test's outcome from pytest's JUnit report: ``passed``, ``failed`` or ``not run: <skip reason>``.

    pytest counts a skip as a success; here it is not, since a kernel skipped for a missing package was never
    compared with anything.
    """
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag == "skipped":
                outcome = f"not run: {child.get('message', '')}"
            elif child.tag in ("failure", "error"):
                outcome = "failed"
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return outcomes


def kernel_results(outcomes: dict[str, str], cuda: bool) -> dict[str, str]:
    """What each attention kernel's test did; on CUDA, raises unless one of them ran and matched SDPA."""
    kernels = {name: outcomes.get(test, "not collected") for name, test in KERNEL_TESTS.items()}
    if cuda and "passed" not in kernels.values():
        said = "; ".join(f"{name}: {outcome}" for name, outcome in kernels.items())
        raise StepFailed(f"no attention kernel ran and matched SDPA ({said})")
    return kernels


def gpu_tests(out: Path, timeout: float, smoke: bool) -> dict:
    log, junit = out / "pytest_gpu.log", out / "pytest_gpu.xml"  # on a CPU (--cpu-smoke) every gpu test skips
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    _run([*cmd, f"--junitxml={junit}"], timeout, log)
    outcomes = test_outcomes(junit)
    counts = {
        k: sum(o.split(":")[0] == k for o in outcomes.values()) for k in ("passed", "failed", "not run")
    }
    return {
        "summary": ", ".join(f"{n} {k}" for k, n in counts.items()),
        "tests": outcomes,
        "kernels": kernel_results(outcomes, cuda=not smoke),
    }


def bench(out: Path, timeout: float, smoke: bool) -> dict:
    results = {}
    cases = [("tiny", 256)] if smoke else BENCH_CASES
    per_case = timeout / len(cases)
    for size, length in cases:
        target = out / f"bench_{size}_{length}.json"
        args = ["--size", size, "--min-doc-len", str(max(16, length // 8)), "--max-doc-len", str(length)]
        if smoke:
            args += ["--device", "cpu", "--dtype", "fp32", "--batch-tokens", "1024", "--steps", "2"]
        else:
            args += ["--device", "cuda", "--dtype", "bf16", "--batch-tokens", str(BATCH_TOKENS[size])]
            args += ["--warmup", "2", "--steps", "5"]
        cmd = [sys.executable, str(ROOT / "bench" / "bench_model.py"), *args, "--json", str(target)]
        _run(cmd, per_case, out / f"bench_{size}_{length}.log")
        results[f"{size}@{length}"] = json.loads(target.read_text())["results"]
    return results


def inference(out: Path, timeout: float, smoke: bool) -> dict:
    target = out / "inference.json"
    if smoke:
        args = ["--device", "cpu", "--dtype", "fp32", "--sizes", "tiny", "--models", "mmbert", "transformers"]
        args += ["--scenarios", "fixed-512", "variable-8192", "--samples", "2"]
    else:
        args = ["--device", "cuda", "--dtype", "bf16", "--samples", "8192"]
    # The script's own budget leaves time for building the models, the samples and the checks.
    args += ["--budget-s", f"{max(10.0, 0.75 * timeout - 30):.0f}"]
    cmd = [sys.executable, str(ROOT / "bench" / "bench_inference.py"), *args, "--json", str(target)]
    _run(cmd, timeout, out / "inference.log")
    report = json.loads(target.read_text())
    keep = ("labels", "results", "ratios", "goals", "embedding_check", "memory_check", "device")
    return {k: report[k] for k in keep}


def write_shards(root: Path, docs_per_language: int) -> None:
    """The sample corpus tokenized with its tokenizer, in the release's MDS layout (one folder a language)."""
    import numpy as np

    from mmbert.data import MdsWriter, SampleMix, load_tokenizer

    mix = SampleMix(subset="decay-all")
    tok = load_tokenizer(mix.tokenizer)
    for lang in mix.languages:
        with MdsWriter(root / lang, {"id": "str", "input_ids": "ndarray:uint32"}) as writer:
            texts = mix.train_source(lang).first_docs(docs_per_language)
            for i, ids in enumerate(tok(texts, add_special_tokens=False)["input_ids"]):
                body = [tok.bos_token_id, *ids][:8192]
                writer.write({"id": f"{lang}-{i}", "input_ids": np.asarray(body, "uint32")})


def train(out: Path, timeout: float, smoke: bool) -> dict:
    shards = out / "shards"
    write_shards(shards, 8 if smoke else 400)
    run_dir = out / "train_small"
    steps = 3 if smoke else TRAIN_STEPS
    size = ["model=tiny", "trainer=cpu"] if smoke else ["model=small", "trainer=gpu"]
    overrides = [
        *size, "data_mix=mds", f"data_mix.path={shards}", "data_mix.tokenizer=data/tokenizer",
        f"trainer.max_steps={steps}", "callbacks.batch_warmup=null", "logger=csv", "data.val_docs_per_lang=2",
        f"trainer.val_check_interval={steps}", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    if smoke:
        overrides += ["phase.seq_len=128", "global_batch_rows=4", "data.rows_per_device=4"]
    else:
        overrides += ["global_batch_rows=64"]  # one micro-batch of 64 x 1024 a step
    _run([sys.executable, str(ROOT / "train.py"), *overrides], timeout, out / "train_small.log")
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))

    def series(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key)]

    rates, mfu, loss = series("train/tokens_per_s"), series("train/mfu"), series("train/loss")
    steady = rates[len(rates) // 5 :] or rates  # the first steps include compilation and warm-up
    return {
        "model": "tiny (CPU smoke)" if smoke else "small, 256k vocabulary",
        "steps": len(loss),
        "tokens_per_s_median": statistics.median(steady) if steady else None,
        "mfu_median": statistics.median(mfu[len(mfu) // 5 :]) if mfu else None,
        "loss_first": loss[0] if loss else None,
        "loss_last": loss[-1] if loss else None,
    }


def _table(report: dict) -> str:
    lines = [f"GPU check on {report['device']} ({report['started']})", "",
             "| step | status | seconds |", "|---|---|---|"]  # fmt: skip
    for name, step in report["steps"].items():
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.0f} |")
    tests = report["steps"].get("gpu_tests", {}).get("figures")
    if tests:
        lines += ["", f"gpu tests: {tests['summary']}", "", "| attention kernel vs SDPA (bf16) | result |",
                  "|---|---|", *(f"| {k} | {v} |" for k, v in tests["kernels"].items())]  # fmt: skip
    bench_results = report["steps"].get("bench", {}).get("figures", {})
    if bench_results:
        lines += ["", "| size @ tokens | implementation | tokens/s (best) | MFU | peak step memory (GiB) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for case, impls in bench_results.items():
            for impl, f in impls.items():
                mfu = "-" if f["mfu_best"] is None else f"{100 * f['mfu_best']:.1f}%"
                mem = "-" if f["peak_step_bytes"] is None else f"{f['peak_step_bytes'] / 2**30:.2f}"
                lines.append(f"| {case} | {impl} | {f['tokens_per_s_best']:,.0f} | {mfu} | {mem} |")
            rates = [f["tokens_per_s_best"] for f in impls.values()]
            if len(rates) == 2:
                lines.append(f"| {case} | ratio | {rates[0] / rates[1]:.2f}x | | |")
    run = report["steps"].get("train", {}).get("figures")
    if run and run["steps"]:
        mfu = "-" if run["mfu_median"] is None else f"{100 * run['mfu_median']:.1f}%"
        lines += ["", f"train.py, {run['model']}: {run['steps']} steps, median "
                  f"{run['tokens_per_s_median'] or 0:,.0f} tokens/s, MFU {mfu}, loss {run['loss_first']:.2f} -> "
                  f"{run['loss_last']:.2f}"]  # fmt: skip
    inf = report["steps"].get("inference", {}).get("figures")
    if inf:
        scenarios = list(next(iter(inf["results"].values())))
        lines += [
            "",
            "| inference tokens/s | " + " | ".join(scenarios) + " |",
            "|---" * (len(scenarios) + 1) + "|",
        ]
        for key, cells in inf["results"].items():
            row = [("-" if c is None else f"{c['tokens_per_s']:,.0f}" + ("" if c["complete"] else " (partial)"))
                   for c in cells.values()]  # fmt: skip
            lines.append(f"| {inf['labels'][key]} | " + " | ".join(row) + " |")
        for name, ratio in inf["ratios"].items():
            lines.append(
                f"| {name} | " + " | ".join("-" if v is None else f"{v:.2f}x" for v in ratio.values()) + " |"
            )
        checks = ", ".join(f"{size} {c['max_abs_diff']:.1e}" for size, c in inf["embedding_check"].items())
        lines += ["", f"embedding check (max abs diff vs transformers, fp32): {checks}", "",
                  *(f"- [{g['status']}] {g['goal']}" for g in inf["goals"])]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--budget-s", type=float, default=480.0, help="time for all steps together")
    parser.add_argument("--inference-budget-s", type=float, default=480.0, help="time for the inference step")
    parser.add_argument("--skip-inference", action="store_true", help="leave out the inference benchmark")
    parser.add_argument("--cpu-smoke", action="store_true", help="the plumbing on a CPU at toy sizes")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --cpu-smoke to test the script itself)", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.cpu_smoke else torch.cuda.get_device_name(0)
    report = {"device": device, "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "steps": {}}  # fmt: skip
    # Shares of the budget: the benchmark has eight models to time, the others one run each.
    # The inference benchmark has its own time (--inference-budget-s), not a share of --budget-s.
    plan = [("gpu_tests", gpu_tests, args.budget_s * 0.2), ("bench", bench, args.budget_s * 0.55),
            ("train", train, args.budget_s * 0.25)]  # fmt: skip
    if not args.skip_inference:
        plan.append(("inference", inference, args.inference_budget_s))
    failed = None
    for name, fn, seconds in plan:
        start = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            figures = fn(out, seconds, args.cpu_smoke)
            report["steps"][name] = {"status": "ok", "figures": figures}
        except (StepFailed, OSError, ValueError) as e:
            report["steps"][name] = {"status": "failed", "error": str(e)}
            failed = name
        report["steps"][name]["seconds"] = time.perf_counter() - start
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        (out / "gpu_check.md").write_text(_table(report))
        if failed:
            print(f"gpu_check: step {failed!r} failed: {report['steps'][name]['error']}", file=sys.stderr)
            break
    print(_table(report))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
