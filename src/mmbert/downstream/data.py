"""Reading a task's splits from local files (jsonl, parquet, csv) or hub datasets, with column names mapped
to the task's fields, and the checks that run before any training.

A split's source is a path, ``{path: FILE, language: LANG}``, a hub spec ``{hub: NAME, name: CONFIG, split: SPLIT,
language: LANG}`` (the ``datasets.load_dataset`` call, other keys passed on to it), or a list of those,
concatenated. ``language`` labels every row of the source; ``language_from: {field: F, regex: R, names: {...}}``
takes each row's language from the first group of ``R`` in field ``F`` instead (TyDiQA's ids), mapped by
``names``. Fields are
the task's names (``text``, ``answers.text``); ``columns`` maps a field to the source's column, dotted for a
nested struct (``answers.text`` inside an ``answers`` column) or flat (a csv column named ``answers.text``).
In csv files a list-valued field (``tokens``, ``answers.text``) is a JSON list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbert.errors import DataError, HubError
from mmbert.hub import retrying

UNKNOWN_LANGUAGE = "und"  # ISO 639 "undetermined": rows of a source that names no language
SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Split:
    """The rows of one split, keyed by the task's field names (``language`` always set)."""

    name: str  # train | dev | test
    origin: str  # the file(s) or hub spec, for messages
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        return sorted({r["language"] for r in self.rows})

    def where(self, languages: Sequence[str]) -> Split:
        keep = set(languages)
        return Split(self.name, self.origin, [r for r in self.rows if r["language"] in keep])

    def error(self, message: str) -> DataError:
        return DataError(f"{self.name} split {self.origin}: {message}")


@dataclass(frozen=True)
class Fields:
    """What a task reads: required fields, optional ones, and which hold lists."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()


def read_split(
    name: str, source: Any, fields: Fields, columns: Mapping[str, str] | None = None, limit: int | None = None
) -> Split | None:
    """The split ``name`` (None where ``source`` is None); DataError naming the source and field for a missing
    column, a missing value or an empty split."""
    if source is None:
        return None
    sources = list(source) if isinstance(source, Sequence) and not isinstance(source, str) else [source]
    if not sources:
        return None
    columns = dict(columns or {})
    origins, rows = [], []
    for src in sources:
        origin, table, language_rule = _open(src, name)
        origins.append(origin)
        rows.extend(_rows(name, origin, table, fields, columns, language_rule))
    split = Split(name, " + ".join(origins), rows[:limit] if limit else rows)
    if not split.rows:
        raise split.error("the split is empty")
    return split


def _open(src: Any, split_name: str) -> tuple[str, list[dict[str, Any]], Any]:
    """(origin, records, language rule: None, a language, or a ``language_from`` mapping)."""
    if isinstance(src, Mapping) and "path" in src:
        spec = dict(src)
        origin, records, _ = _open(str(spec.pop("path")), split_name)
        return origin, records, _language_rule(spec, split_name)
    if isinstance(src, str | Path):
        path = Path(src)
        if not path.is_file():
            raise DataError(f"task.{split_name}_file={path}: no such file")
        kind = SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise DataError(f"task.{split_name}_file={path}: unknown format (use {', '.join(SUFFIXES)})")
        return str(path), _read_local(path, kind), None
    if isinstance(src, Mapping) and "hub" in src:
        return _read_hub(dict(src), split_name)
    raise DataError(f"task.{split_name}_file: expected a path or {{hub: ..., split: ...}}, got {src!r}")


def _read_local(path: Path, kind: str) -> list[dict[str, Any]]:
    if kind == "json":
        if path.suffix.lower() == ".jsonl":
            return [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data.get("data", [])
    import pandas as pd  # for .parquet and .csv only: JSON task files need no pandas

    frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, keep_default_na=False)
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    """numpy arrays / scalars and struct dicts from parquet -> Python lists / scalars / dicts."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _language_rule(spec: dict[str, Any], split_name: str) -> Any:
    """Pops ``language`` / ``language_from`` from a source spec."""
    language, rule = spec.pop("language", None), spec.pop("language_from", None)
    if rule is not None:
        if not isinstance(rule, Mapping) or "field" not in rule or "regex" not in rule:
            raise DataError(f"task.{split_name}_file: language_from needs 'field' and 'regex', got {rule!r}")
        return {
            "field": rule["field"],
            "regex": re.compile(rule["regex"]),
            "names": dict(rule.get("names") or {}),
        }
    return language


def _read_hub(spec: dict[str, Any], split_name: str) -> tuple[str, list[dict[str, Any]], Any]:
    import datasets

    hub, config, split = spec.pop("hub"), spec.pop("name", None), spec.pop("split", split_name)
    language = _language_rule(spec, split_name)
    origin = f"{hub}" + (f"/{config}" if config else "") + f"[{split}]"
    try:
        # Retried whole on a transient Hub error: what datasets has downloaded stays in its cache.
        ds = retrying(
            f"task.{split_name}_file: {origin}",
            lambda: datasets.load_dataset(hub, config, split=split, **spec),
        )
    except HubError:
        raise
    except Exception as err:  # hub, network and builder errors are many types
        raise DataError(f"task.{split_name}_file: could not load {origin}: {err}") from err
    return origin, _with_label_names(ds), language


def _with_label_names(ds: Any) -> list[dict[str, Any]]:
    """Records with ClassLabel values (and sequences of them, e.g. NER tags) as their names."""
    import datasets

    names = {}
    for col, feature in ds.features.items():
        inner = getattr(feature, "feature", None)
        if isinstance(feature, datasets.ClassLabel):
            names[col] = (False, feature.names)
        elif isinstance(inner, datasets.ClassLabel):
            names[col] = (True, inner.names)
    records = []
    for row in ds:
        for col, (is_seq, label_names) in names.items():
            row[col] = [label_names[v] for v in row[col]] if is_seq else label_names[row[col]]
        records.append(row)
    return records


def _rows(
    split_name: str,
    origin: str,
    records: list[dict[str, Any]],
    fields: Fields,
    columns: Mapping[str, str],
    language_rule: Any,
) -> list[dict[str, Any]]:
    if not records:
        return []
    wanted = [*fields.required, *fields.optional, "language"]
    present = {f for f in wanted if records and _has(records[0], columns.get(f, f))}
    for f in fields.required:
        if f not in present:
            col = columns.get(f, f)
            raise DataError(
                f"{split_name} split {origin}: no column {col!r} for field {f!r} "
                f"(set task.columns.{f}); columns: {sorted(records[0]) if records else []}"
            )
    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {}
        for f in present:
            value = _get(record, columns.get(f, f))
            if f in fields.lists and isinstance(value, str) and value.startswith("["):
                value = json.loads(value)
            if value is None or value == "":
                if f in fields.required:
                    raise DataError(f"{split_name} split {origin}: row {i} has no value for field {f!r}")
                continue
            row[f] = value
        if isinstance(language_rule, Mapping):
            row["language"] = _language_of(record, language_rule, f"{split_name} split {origin}: row {i}")
        elif language_rule is not None:
            row["language"] = language_rule
        row["language"] = str(row.get("language") or UNKNOWN_LANGUAGE)
        rows.append(row)
    return rows


def _language_of(record: Mapping[str, Any], rule: Mapping[str, Any], where: str) -> str:
    try:
        value = str(_get(record, rule["field"]))
    except KeyError:
        raise DataError(f"{where}: no field {rule['field']!r} for language_from") from None
    match = rule["regex"].search(value)
    if match is None:
        raise DataError(f"{where}: field {rule['field']!r}={value!r} does not match language_from.regex")
    code = match.group(1) if match.groups() else match.group(0)
    return rule["names"].get(code, code)


def _has(record: Mapping[str, Any], column: str) -> bool:
    try:
        _get(record, column)
    except KeyError:
        return False
    return True


def _get(record: Mapping[str, Any], column: str) -> Any:
    """``record[column]``, or for a dotted name that is not itself a column, the nested value."""
    if column in record:
        return record[column]
    head, _, rest = column.partition(".")
    if rest and isinstance(record.get(head), Mapping):
        return _get(record[head], rest)
    raise KeyError(column)


def check_languages(split: Split, requested: Sequence[str] | None, setting: str) -> None:
    """DataError when ``setting`` (e.g. task.train_languages) names a language the split has no row of."""
    if requested is None:
        return
    missing = sorted(set(requested) - set(split.languages))
    if missing:
        raise split.error(
            f"{setting} names {missing}, which no row has in field 'language'; languages: {split.languages}"
        )
