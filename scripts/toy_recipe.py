"""The three-phase mmBERT recipe end to end at toy scale: the sample corpus, on CPU, in minutes.

    python scripts/toy_recipe.py [--root outputs/toy_recipe] [hydra overrides for every train.py call ...]

Runs `train.py experiment=toy` for pre-training, mid-training (context extension, from pre-training's last
checkpoint) and the three decay variants (one Hydra multirun, all from mid-training's last checkpoint), then the
two merges of the recipe: TIES of the decay variants over the mid-training weights (how mmBERT base was
made) and an EMA of Decay-All's checkpoints (mmBERT small). Everything lands in one root, laid out as the
notebooks expect: pretrain/, midtrain/, decay-{eng,cont,all}/ (each with csv/, checkpoints/, mixture.json
and hf/) and merges/{ties,ema}/.

Nothing is lost on interruption: rerun the same command. A stage whose Hugging Face output exists is skipped;
one interrupted after a checkpoint resumes from its last.ckpt, its metrics logged so far kept.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages import StageFailed, call, exported, header

DECAY_VARIANTS = ("decay-eng", "decay-cont", "decay-all")
# mmBERT did not publish its TIES settings. Keeping half of each task vector (mergekit's usual density) gave
# the lowest mean test MLM loss of 0.2 / 0.5 / 0.8 / 1.0 on the toy run; 0.2 lost much of Decay-All's gain on
# the languages only it trains on.
TIES_DENSITY = 0.5
# The decay phase anneals the LR to 0.04x, so its latest checkpoints weigh most: with a half-life of two
# checkpoints the final one gets about a third of the weight. On the toy run half-lives of 1, 2 and 4 were
# within 0.05 test MLM loss of each other.
EMA_HALF_LIFE = 2


@dataclass
class Stage:
    name: str
    status: str = "pending"
    wall_s: float | None = None
    shared_wall: bool = False  # timed together with other stages (the decay multirun)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("outputs/toy_recipe"), help="where all runs go")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every train.py call")
    return parser.parse_args()


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def train(stage: Stage, overrides: list[str], extra: list[str], run_dir: Path) -> None:
    """One train.py run into run_dir, resumed from its last checkpoint if it has one."""
    last = last_checkpoint(run_dir)
    resume = last.is_file()
    if resume:  # metrics.csv keeps the rows logged before the checkpoint (ResumableCSVLogger)
        overrides = [*overrides, f"ckpt_path={last}"]
    start = time.monotonic()
    call(stage.name, ["train.py", *overrides, f"hydra.run.dir={run_dir}", *extra])
    stage.status, stage.wall_s = ("resumed" if resume else "ran"), time.monotonic() - start


def skip_if_exported(stage: Stage, run_dir: Path) -> bool:
    if exported(run_dir):
        stage.status = "skipped"
        print(f"{run_dir / 'hf'} exists: skipped", flush=True)
    return stage.status == "skipped"


def run_phase(stage: Stage, root: Path, overrides: list[str], extra: list[str]) -> None:
    run_dir = root / stage.name
    header(f"{stage.name}: {run_dir}")
    if not skip_if_exported(stage, run_dir):
        train(stage, ["experiment=toy", *overrides], extra, run_dir)


def run_decays(stages: list[Stage], root: Path, extra: list[str]) -> None:
    """The decay variants branch off the same mid-training checkpoint: the fresh ones run as one multirun, one
    interrupted mid-way resumes on its own (from its own checkpoint)."""
    overrides = ["experiment=toy", "phase=decay", f"model.init_from={last_checkpoint(root / 'midtrain')}"]
    header(f"decay variants: {', '.join(str(root / s.name) for s in stages)}")
    fresh = []
    for stage in stages:
        run_dir = root / stage.name
        if skip_if_exported(stage, run_dir):
            continue
        if last_checkpoint(run_dir).is_file():
            train(stage, [*overrides, f"data_mix.subset={stage.name}"], extra, run_dir)
        else:
            fresh.append(stage)
    if not fresh:
        return
    sweep = [
        "-m",
        *overrides,
        f"data_mix.subset={','.join(s.name for s in fresh)}",
        f"hydra.sweep.dir={root}",
        # Resolved per job: each variant's folder is named after its mixture (decay-eng, ...).
        "hydra.sweep.subdir=${data_mix.subset}",
    ]
    start = time.monotonic()
    try:
        call("decay", ["train.py", *sweep, *extra])
    except StageFailed as err:
        # Hydra runs every job of the sweep before it fails: name the variants that did not finish.
        unfinished = ", ".join(s.name for s in fresh if not exported(root / s.name))
        raise StageFailed(unfinished or "decay", err.returncode) from err
    for stage in fresh:
        stage.status, stage.wall_s, stage.shared_wall = "ran", time.monotonic() - start, len(fresh) > 1


def ties_args(root: Path) -> list[str]:
    variants = ",".join(str(root / name / "hf") for name in DECAY_VARIANTS)
    base = root / "midtrain" / "hf"
    return ["method=ties", f"base={base}", f"models=[{variants}]", f"density={TIES_DENSITY}"]


def ema_args(root: Path) -> list[str]:
    """Decay-All's step checkpoints, oldest first; the last is its final step (always saved)."""
    steps = (root / "decay-all" / "checkpoints").glob("step-*.ckpt")
    models = sorted(steps, key=lambda p: int(p.stem.removeprefix("step-")))
    return ["method=ema", f"models=[{','.join(map(str, models))}]", f"half_life={EMA_HALF_LIFE}"]


def run_merge(stage: Stage, root: Path, merge_args: Callable[[Path], list[str]]) -> None:
    output = root / stage.name
    header(f"{stage.name}: {output}")
    if output.is_dir():  # merge.py renames a finished merge into place: the folder is a complete one
        stage.status = "skipped"
        print(f"{output} exists: skipped", flush=True)
        return
    start = time.monotonic()
    call(stage.name, ["merge.py", *merge_args(root), f"output_dir={output}"])
    stage.status, stage.wall_s = "ran", time.monotonic() - start


def final_metrics(run_dir: Path) -> tuple[str, str, str]:
    """Steps, tokens and the last val/loss of a run, as logged in csv/metrics.csv ("-" for a merge)."""
    metrics = run_dir / "csv" / "metrics.csv"
    rows = list(csv.DictReader(metrics.read_text().splitlines())) if metrics.is_file() else []
    if not rows:
        return "-", "-", "-"
    steps = max(int(float(row["step"])) for row in rows if row.get("step")) + 1  # logged steps count from 0
    tokens = max(float(row["train/tokens"]) for row in rows if row.get("train/tokens"))
    val_loss = [float(row["val/loss"]) for row in rows if row.get("val/loss")]
    return f"{steps:,}", f"{tokens:,.0f}", f"{val_loss[-1]:.3f}" if val_loss else "-"


def summary(stages: list[Stage], root: Path, total_s: float) -> None:
    header(f"summary: {root}")
    print(f"{'stage':<12} {'status':<8} {'steps':>7} {'tokens':>11} {'val/loss':>9} {'wall':>8}")
    for stage in stages:
        steps, tokens, val_loss = final_metrics(root / stage.name)
        wall = "-" if stage.wall_s is None else f"{stage.wall_s:.0f}s" + ("*" if stage.shared_wall else "")
        print(f"{stage.name:<12} {stage.status:<8} {steps:>7} {tokens:>11} {val_loss:>9} {wall:>8}")
    print(f"{'total':<51} {total_s:>7.0f}s")
    if any(stage.shared_wall for stage in stages):
        print("* one multirun for these decay variants: its wall time, shared")
    print("val/loss: each phase validates on its own languages and row length (notebook 02 compares all)")


def main() -> int:
    args = parse_args()
    root = args.root.resolve()  # the commands run from the repository root, not from the caller's folder
    start = time.monotonic()
    pretrain, midtrain = Stage("pretrain"), Stage("midtrain")
    decays = [Stage(name) for name in DECAY_VARIANTS]
    ties, ema = Stage("merges/ties"), Stage("merges/ema")
    try:
        run_phase(pretrain, root, ["phase=pretrain"], args.overrides)
        init = f"model.init_from={last_checkpoint(root / 'pretrain')}"
        run_phase(midtrain, root, ["phase=midtrain", init], args.overrides)
        run_decays(decays, root, args.overrides)
        run_merge(ties, root, ties_args)
        run_merge(ema, root, ema_args)
    except StageFailed as err:
        print(f"\ntoy_recipe: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntoy_recipe: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    summary([pretrain, midtrain, *decays, ties, ema], root, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
