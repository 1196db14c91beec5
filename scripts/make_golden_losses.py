"""Writes tests/golden/tiny_cpu_20_steps.json: the per-step training losses of a fixed 20-step tiny CPU run.

    python scripts/make_golden_losses.py [--out tests/golden/tiny_cpu_20_steps.json] [--threads N]

tests/train/test_golden.py reruns the same run and compares every step's train/loss with the file. Regenerate the
file only for an intended change of the numerics (model, loss, optimizer, data pipeline, masking, schedules),
and say in the same commit why the losses moved.

The run: the tiny model on the sample corpus, seed 21, fp32, SDPA attention, no dropout, 128-token rows,
8 rows a step in two micro-batches of 4, token budgets scaled so that the LR warms up within the run, no
validation, no data workers. Everything it needs is in the repository; it takes seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "tiny_cpu_20_steps.json"
STEPS = 20
# Hydra overrides of conf/train.yaml. A change here needs a regenerated file (the test checks they match).
OVERRIDES = [
    "model=tiny",
    "phase=pretrain",
    "data_mix=sample",
    "seed=21",
    f"trainer.max_steps={STEPS}",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.limit_val_batches=0",
    "trainer.val_check_interval=1000",
    "phase.seq_len=128",
    "data.num_workers=0",
    "data.rows_per_device=4",
    "data.val_docs_per_lang=2",
    "model.config.attn_backend=sdpa",
    "model.config.attention_output_dropout=0.0",
    "module.compile=false",
    # LR warmup of 15k tokens (about 15 steps of 8 x 128), so the 20 steps train at a real LR.
    "token_scale=0.05",
    "callbacks.batch_warmup=null",
    "callbacks.model_checkpoint=null",
    "callbacks.best_checkpoint=null",
    "callbacks.token_checkpoint=null",
    "callbacks.hf_export=null",
    "logger=csv",
]


def train_losses(output_dir: Path, extra: list[str] | None = None) -> list[float]:
    """Runs the golden run into `output_dir` and returns train/loss of steps 0 .. STEPS - 1."""
    import csv

    from mmbert.train.config import compose_train
    from mmbert.train.run import run

    # Relative paths of the config (data/sample, data/tokenizer) are taken from the repository root.
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        run(compose_train([*OVERRIDES, *(extra or [])], output_dir=output_dir))
    finally:
        os.chdir(cwd)
    rows = csv.DictReader((output_dir / "csv" / "metrics.csv").read_text().splitlines())
    by_step = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    if sorted(by_step) != list(range(STEPS)):
        raise RuntimeError(f"expected train/loss at steps 0..{STEPS - 1}, got steps {sorted(by_step)}")
    return [by_step[s] for s in range(STEPS)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=GOLDEN, help="the golden file to write")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lightning
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="golden_run_") as tmp:
        losses = train_losses(Path(tmp) / "run")
    if not all(math.isfinite(v) for v in losses):
        raise SystemExit(f"non-finite losses, not writing {args.out}: {losses}")
    record = {
        "description": "train/loss of each optimizer step of a fixed 20-step tiny CPU run (tests/train/test_golden.py)",
        "regenerate": "python scripts/make_golden_losses.py",
        "overrides": OVERRIDES,
        "steps": STEPS,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "losses": losses,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}: losses {losses[0]:.6f} .. {losses[-1]:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
