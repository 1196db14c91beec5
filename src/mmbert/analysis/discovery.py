"""Finding the runs and Hugging Face checkpoints of a recipe root, in the order the recipe produced them.

A recipe root holds run folders (``pretrain/``, ``midtrain/``, ``decay-*/``, each with ``csv/metrics.csv``,
``mixture.json``, ``hf/``) and merges (``merges/ties/``, ``merges/ema/``: HF folders). Everything is named by
its path relative to the root; a run's ``hf/`` export takes the run's name.
"""

from __future__ import annotations

from pathlib import Path

from mmbert.checkpoint.formats import CONFIG_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, TORCH_BIN_FILE

PHASES = ("pretrain", "midtrain", "decay", "merges")
# Known names within a phase in the order the recipe describes them; unknown names sort after, by name.
KNOWN_ORDER = ("decay-eng", "decay-cont", "decay-all", "merges/ties", "merges/ema")
# Folders that never hold runs or checkpoints of their own.
_SKIP_DIRS = {"csv", "checkpoints", ".hydra", "__pycache__", "wandb", "tensorboard", "lightning_logs"}
_WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, TORCH_BIN_FILE)


def phase_of(name: str) -> str:
    """Recipe phase of a run or checkpoint name: ``decay-all`` -> ``decay``, ``merges/ties`` -> ``merges``."""
    first = name.split("/", 1)[0]
    if first in ("pretrain", "midtrain", "merges"):
        return first
    if first.startswith("decay"):
        return "decay"
    return "other"


def order_key(name: str) -> tuple[int, int, str]:
    """Sort key: pretrain, midtrain, decay variants (eng, cont, all, others), merges (ties, ema, others), the rest."""
    phase = phase_of(name)
    rank = PHASES.index(phase) if phase in PHASES else len(PHASES)
    known = KNOWN_ORDER.index(name) if name in KNOWN_ORDER else len(KNOWN_ORDER)
    return rank, known, name


def parent_of(name: str) -> str | None:
    """The run a phase starts from: every decay variant branches off the mid-training run."""
    phase = phase_of(name)
    if phase == "midtrain":
        return "pretrain"
    if phase == "decay":
        return "midtrain"
    return None


def is_hf_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and any((path / f).is_file() for f in _WEIGHT_FILES)


def is_run_folder(path: Path) -> bool:
    return (path / "mixture.json").is_file() or (path / "csv").is_dir() or (path / "checkpoints").is_dir()


def _relative_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    # A root that is itself a single run is named after its folder.
    return root.resolve().name if rel == "." else rel


def _walk(root: Path) -> list[Path]:
    """Every folder under root (root included), not descending into logger/checkpoint folders."""
    found = [root]
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS):
        found.extend(_walk(child))
    return found


def find_runs(root: str | Path) -> dict[str, Path]:
    """``{name: run folder}`` of the training runs under ``root``, in recipe order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"run root {root} is not a folder")
    runs = {_relative_name(p, root): p for p in _walk(root) if is_run_folder(p)}
    return dict(sorted(runs.items(), key=lambda item: order_key(item[0])))


def find_checkpoints(root: str | Path) -> dict[str, Path]:
    """``{name: HF folder}`` of every Hugging Face checkpoint under ``root``, in recipe order.

    A run's ``hf/`` export is named after the run (``decay-all``), a merge after its folder (``merges/ties``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"run root {root} is not a folder")
    found: dict[str, Path] = {}
    for folder in _walk(root):
        if not is_hf_folder(folder):
            continue
        owner = (
            folder.parent
            if folder.name == "hf" and folder != root and is_run_folder(folder.parent)
            else folder
        )
        found[_relative_name(owner, root)] = folder
    return dict(sorted(found.items(), key=lambda item: order_key(item[0])))
