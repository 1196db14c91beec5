"""Checks of the settings every mix takes from its ``conf/data_mix`` config, with the mix named in errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmbert.data.paths import resolve_path
from mmbert.errors import DataError


def mix_root(path: str | None, kind: str) -> Path:
    """The folder of a mix read from disk, resolved; ``kind`` is its ``data_mix`` choice, for the error."""
    if path is None or str(path) in ("", "???"):
        raise DataError(f"data_mix.path is not set (data_mix={kind} data_mix.path=DIR)")
    return resolve_path(path)


def as_list(value: Iterable[str] | str | None) -> list[str] | None:
    """A one-or-many setting (``x``, ``[x, y]``, null) as a list of strings, or None."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


def check_counts(counts: Mapping[str, Any], where: str) -> dict[str, int]:
    """Given token counts as ``{language: int > 0}``."""
    out = {}
    for lang, n in counts.items():
        try:
            out[str(lang)] = int(n)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: token count of {lang!r} is not an integer: {n!r}") from e
        if out[str(lang)] <= 0:
            raise DataError(f"{where}: token count of {lang!r} must be > 0, got {n!r}")
    return out
