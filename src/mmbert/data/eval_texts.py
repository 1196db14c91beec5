"""Evaluation texts: the ``test/`` split of a FineWeb2-layout corpus and a parallel-sentence file.

Read by both the downstream toy tasks and the notebooks' analyses, so they live below both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mmbert.data.langcodes import normalize_language
from mmbert.data.mix.folder import FileSource
from mmbert.data.mix.layout import data_files, languages_base

if TYPE_CHECKING:
    import pandas as pd


def languages_with_test_split(corpus: str | Path) -> dict[str, Path]:
    """``{language: test folder}`` of the ``{iso639_3}_{Script}/test/`` folders in ``corpus`` (or
    ``corpus/data``) that hold data files, sorted by language."""
    root = Path(corpus)
    base = languages_base(root)
    if not base.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist")
    found = {}
    for folder in sorted(p for p in base.iterdir() if (p / "test").is_dir()):
        lang = normalize_language(folder.name)
        if lang is not None and data_files(folder / "test"):
            found[lang] = folder / "test"
    return found


def read_test_texts(
    corpus: str | Path, languages: list[str] | None = None, max_docs: int = 32
) -> dict[str, list[str]]:
    """The first ``max_docs`` documents (file order) of each language's test split; all languages with a
    test split if ``languages`` is None. KeyError naming a requested language that has none."""
    available = languages_with_test_split(corpus)
    wanted = list(available) if languages is None else languages
    missing = [lang for lang in wanted if lang not in available]
    if missing:
        raise KeyError(f"no test split for {missing} in {corpus}; available: {sorted(available)}")
    texts = {}
    for lang in wanted:
        docs = FileSource(lang, data_files(available[lang])).first_docs(max_docs)
        texts[lang] = [str(d) for d in docs]
    return texts


def read_parallel(path: str | Path) -> pd.DataFrame:
    """Parallel sentences as a table: index ``id``, one column per language, NaN where a sentence has no
    translation. The file holds one JSON record per sentence id: ``{"id": ..., "<lang>": text, ...}``."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if "id" not in record:
                raise ValueError(f"{path}:{line_no}: record without 'id'")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no parallel sentences")
    import pandas as pd  # not a core dependency: only the analyses and the toy tasks read parallel files

    table = pd.DataFrame.from_records(records).set_index("id")
    if not table.index.is_unique:
        raise ValueError(f"{path}: duplicate sentence ids")
    return table[sorted(table.columns)]
