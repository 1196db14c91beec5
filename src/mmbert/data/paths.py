"""Where relative paths in data settings point: the repository root, whatever the working directory.

Hydra changes the working directory of a run, so ``data/sample`` in a config must not depend on it. A relative
path is resolved against the repository root: the checkout holding ``conf/`` next to ``src/mmbert`` (editable
install), else ``$MMBERT_ROOT``, else the current directory. Absolute paths and ``~`` are used as given.
Paths the project writes (``prepare``'s ``out``) are taken from the working directory (:func:`output_path`).
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "conf").is_dir() and (checkout / "src" / "mmbert").is_dir():
        return checkout
    env = os.environ.get("MMBERT_ROOT")
    return Path(env) if env else Path.cwd()


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Absolute form of a data path. A relative path is taken from the working directory when it exists
    there, else from the repository root (where the shipped defaults such as data/sample live)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return p.resolve() if p.exists() else repo_root() / p


def output_path(path: str | os.PathLike[str]) -> Path:
    """Absolute form of a path the project writes to: a relative one is taken from the working directory (it
    need not exist yet, so the repository-root fallback of :func:`resolve_path` would misplace it)."""
    return Path(path).expanduser().resolve()


def resolve_tokenizer(name: str) -> str:
    """A local tokenizer folder (absolute, or relative to the repository root) or else a hub model id."""
    p = resolve_path(name)
    return str(p) if p.exists() else name
