"""The FineWeb2 folder layout: ``{iso639_3}_{Script}/train/*`` (+ ``test/*``) language folders, directly in a
root or under its ``data/``, as the hub repository is laid out; read by folder mixes, ``prepare`` and the
analysis of test splits."""

from __future__ import annotations

from pathlib import Path

from mmbert.data.langcodes import normalize_language
from mmbert.data.readers import SUFFIXES, file_format
from mmbert.errors import DataError


def data_files(folder: Path) -> list[Path]:
    """The readable data files under ``folder`` (any depth), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and file_format(p) is not None)


def languages_base(root: Path) -> Path:
    """The folder holding the language folders: ``root/data`` if there is one, else ``root``."""
    return root / "data" if (root / "data").is_dir() else root


def has_language_folders(root: Path) -> bool:
    """Whether ``root`` is laid out by language (some folder has a ``train/``), not a flat folder of files."""
    return any((d / "train").is_dir() for d in languages_base(root).iterdir() if d.is_dir())


def discover_languages(root: Path) -> dict[str, Path]:
    """``{language: folder}`` of the ``{iso639_3}_{Script}/train/`` folders in ``root`` or ``root/data``."""
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    base = languages_base(root)
    found: dict[str, Path] = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir() and (p / "train").is_dir()):
        lang = normalize_language(d.name)
        if lang is None:
            continue
        if lang in found:
            raise DataError(f"{base}: folders {found[lang].name!r} and {d.name!r} are both language {lang!r}")
        if not data_files(d / "train"):
            raise DataError(f"{d / 'train'}: language folder without data files ({', '.join(SUFFIXES)})")
        found[lang] = d
    if not found:
        raise DataError(f"{root}: no language folders ({{iso639_3}}_{{Script}}/train/*) found")
    return found
