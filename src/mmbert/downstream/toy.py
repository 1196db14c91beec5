"""Small tasks built from a FineWeb2-layout corpus's real sentences (the sample corpus), one per task type, so
that the whole pipeline runs on the toy recipe's checkpoints in minutes and the tests run offline:

- ``script``: which script a sentence is written in (classify, single sentences; easy);
- ``translation``: is sentence B the translation of English sentence A (classify, pairs, parallel.jsonl);
  fine-tuned on the pre-training languages, tested on all (cross-lingual zero-shot);
- ``tag``: capitalised words (after the first) and numbers as BIO entities ``CAP`` / ``NUM``, cased scripts;
- ``qa``: a few sentences as context, the first two words of one of them as the question, that sentence as
  the answer (SQuAD format), space-separated languages;
- ``retrieve``: English -> every other language of parallel.jsonl.

Rows go to train / dev / test by a fixed rule on their index, so that every language is in every split.
The command line is :mod:`mmbert.cli.toy_tasks`. pandas (an extra, not a core dependency) is imported by the
functions that need it only: the parallel sentences, .parquet/.csv files and the result tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmbert.data import FolderMix
from mmbert.data.eval_texts import read_parallel, read_test_texts
from mmbert.data.langcodes import language_script

if TYPE_CHECKING:
    import pandas as pd

CASED_SCRIPTS = {"Latn", "Cyrl", "Grek"}
_SENTENCE_END = re.compile(r"(?<=[.!?।؟。።])\s*")
_SPLITS = ("train", "dev", "test")


def corpus_sentences(corpus: str | Path, max_docs: int = 40) -> dict[str, list[str]]:
    """``{language: distinct sentences}`` of the first ``max_docs`` documents of each language's test split,
    then of its train split, in first-seen order. Both splits, because a corpus may hold out few sentences
    for test (the sample corpus: 5 or 6 a language), too few for the tasks' three splits. Thai marks
    sentences with spaces, so its documents split at spaces."""
    test = read_test_texts(corpus, max_docs=max_docs)
    mix = FolderMix(str(corpus), languages=list(test))
    out = {}
    for lang, docs in test.items():
        seen: dict[str, None] = {}
        for doc in [*docs, *map(str, mix.train_source(lang).first_docs(max_docs))]:
            for line in doc.splitlines():
                parts = line.split(" ") if language_script(lang) == "Thai" else _SENTENCE_END.split(line)
                seen.update((p.strip(), None) for p in parts if p.strip())
        out[lang] = list(seen)
    return out


def split_of(i: int) -> str:
    """Every 5th row (from 0) to test, the next to dev, the rest to train."""
    return {0: "test", 1: "dev"}.get(i % 5, "train")


def script_rows(sentences: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {"text": s, "label": language_script(lang), "language": lang, "split": split_of(i)}
        for lang, sents in sentences.items()
        for i, s in enumerate(sents)
    ]


def translation_rows(parallel: str | Path, train_languages: Iterable[str]) -> list[dict[str, Any]]:
    """Pairs (English, X): X's translation (label ``translation``) or another sentence (``other``). Training
    languages contribute the first 8 sentence ids to train and 2 to dev; every language's last ids are test."""
    table = read_parallel(parallel)
    ids = list(table.index)
    train_languages = set(train_languages)
    rows = []
    for lang in table.columns:
        if lang == "eng_Latn":
            continue
        for i, sid in enumerate(ids):
            split = "test" if i >= len(ids) - 4 else ("dev" if i >= len(ids) - 6 else "train")
            if split != "test" and lang not in train_languages:
                continue
            other = ids[(i + 1 + i % 3) % len(ids)]
            for label, target in (("translation", sid), ("other", other)):
                rows.append(
                    {
                        "text": table.loc[sid, "eng_Latn"],
                        "text_pair": table.loc[target, lang],
                        "label": label,
                        "language": lang,
                        "split": split,
                    }
                )
    return rows


def _entity_tags(words: list[str]) -> list[str]:
    tags: list[str] = []
    for i, word in enumerate(words):
        core = word.strip(".,;:!?\"'()«»„“”")
        if any(ch.isdigit() for ch in core):
            tags.append("B-NUM")
        elif i > 0 and core[:1].isupper():
            tags.append("I-CAP" if tags and tags[-1].endswith("CAP") else "B-CAP")
        else:
            tags.append("O")
    return tags


def tag_rows(sentences: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for lang, sents in sentences.items():
        if language_script(lang) not in CASED_SCRIPTS:
            continue
        for i, s in enumerate(sents):
            words = s.split()
            rows.append(
                {"tokens": words, "tags": _entity_tags(words), "language": lang, "split": split_of(i)}
            )
    return rows


def qa_rows(sentences: Mapping[str, list[str]], context_sentences: int = 4) -> list[dict[str, Any]]:
    rows = []
    for lang, sents in sentences.items():
        usable = [s for s in sents if len(s.split()) >= 4]
        if len(usable) < context_sentences:
            continue
        for j in range(len(usable) - context_sentences + 1):
            window = usable[j : j + context_sentences]
            k = j % context_sentences
            context = " ".join(window)
            start = len(" ".join(window[:k])) + (1 if k else 0)
            question = " ".join(window[k].split()[:2]) + "?"
            rows.append(
                {
                    "context": context,
                    "question": question,
                    "answers": {"text": [window[k]], "answer_start": [start]},
                    "language": lang,
                    "split": split_of(j),
                }
            )
    return rows


def retrieve_rows(parallel: str | Path, source_language: str = "eng_Latn") -> list[dict[str, Any]]:
    table = read_parallel(parallel)
    return [
        {"source": table.loc[sid, source_language], "target": table.loc[sid, lang], "language": lang}
        for lang in table.columns
        if lang != source_language
        for sid in table.index
        if isinstance(table.loc[sid, lang], str)
    ]


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """``path`` by its suffix: .jsonl, .parquet, or .csv (lists as JSON, ``answers`` as flat
    ``answers.text`` / ``answers.answer_start`` columns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"{path}: write .jsonl, .parquet or .csv")
    import pandas as pd

    if suffix == ".parquet":
        pd.DataFrame.from_records(rows).to_parquet(path, index=False)
    else:
        flat = []
        for r in rows:
            out = {}
            for key, value in r.items():
                if isinstance(value, Mapping):
                    out.update({f"{key}.{k}": json.dumps(v, ensure_ascii=False) for k, v in value.items()})
                elif isinstance(value, list):
                    out[key] = json.dumps(value, ensure_ascii=False)
                else:
                    out[key] = value
            flat.append(out)
        pd.DataFrame.from_records(flat).to_csv(path, index=False)
    return path


def write_splits(rows: list[dict[str, Any]], folder: str | Path, fmt: str = "jsonl") -> dict[str, Path]:
    """``folder/{train,dev,test}.{fmt}`` from rows carrying a ``split`` key (rows without one: test only)."""
    paths = {}
    for split in _SPLITS:
        chosen = [
            {k: v for k, v in r.items() if k != "split"} for r in rows if r.get("split", "test") == split
        ]
        if chosen:
            paths[split] = write_rows(chosen, Path(folder) / f"{split}.{fmt}")
    return paths


def write_toy_tasks(
    corpus: str | Path, out_dir: str | Path, fmt: str = "jsonl", train_languages: Iterable[str] | None = None
) -> dict[str, dict[str, Path]]:
    """Every toy task under ``out_dir/<task>/{train,dev,test}.<fmt>``; ``train_languages`` of the
    translation task default to the corpus's pre-training subset."""
    corpus = Path(corpus)
    sentences = corpus_sentences(corpus)
    if train_languages is None:
        meta = json.loads((corpus / "languages.json").read_text())
        train_languages = meta["subsets"]["pretrain"]["languages"]
    parallel = corpus / "parallel.jsonl"
    out = Path(out_dir)
    return {
        "script": write_splits(script_rows(sentences), out / "script", fmt),
        "translation": write_splits(translation_rows(parallel, train_languages), out / "translation", fmt),
        "tag": write_splits(tag_rows(sentences), out / "tag", fmt),
        "qa": write_splits(qa_rows(sentences), out / "qa", fmt),
        "retrieve": write_splits(retrieve_rows(parallel), out / "retrieve", fmt),
    }


# Fine-tuning settings for the toy model (a few hundred examples): a higher LR and more epochs than the
# benchmark configs, sized so that every task on every checkpoint of the toy recipe runs in seconds.
TOY_FINETUNE = {"epochs": 5, "lr": 3e-4, "batch_size": 16, "batch_tokens": 2048, "warmup_ratio": 0.1}
TOY_TASK_TYPES = {
    "script": "classify",
    "translation": "classify",
    "tag": "tag",
    "qa": "qa",
    "retrieve": "retrieve",
}


def toy_task(name: str, files: Mapping[str, Path], max_len: int = 128) -> Any:
    """The Task of toy task ``name`` over its written ``files`` (see :func:`write_toy_tasks`)."""
    from mmbert.downstream.tasks import ClassifyTask, QaTask, RetrieveTask, TagTask

    split_files = {f"{split}_file": str(path) for split, path in files.items()}
    kind = TOY_TASK_TYPES[name]
    if kind == "retrieve":
        return RetrieveTask(name, max_len=max_len, **split_files)
    cls = {"classify": ClassifyTask, "tag": TagTask, "qa": QaTask}[kind]
    extra = {"doc_stride": 32, "max_question_tokens": 16} if kind == "qa" else {}
    return cls(name, max_len=max_len, finetune=TOY_FINETUNE, **extra, **split_files)


def evaluate_toy(
    checkpoints: Mapping[str, str | Path],
    tasks: Mapping[str, Mapping[str, Path]],
    seed: int = 0,
    device: str = "cpu",
) -> pd.DataFrame:
    """One row per (checkpoint, task, language) with every metric (language ``all``: overall), for the toy
    tasks ``tasks`` (:func:`write_toy_tasks`) on each checkpoint."""
    import pandas as pd
    from tqdm import tqdm

    from mmbert.downstream.results import table_rows
    from mmbert.downstream.run import evaluate

    results = []
    for ckpt, path in tqdm(list(checkpoints.items()), desc="checkpoints"):
        for name, files in tasks.items():
            result = evaluate(toy_task(name, files), path, seed=seed, device=device)
            results.append(result | {"model": ckpt})
    return pd.DataFrame(table_rows(results))


def main_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """checkpoint x task table of each task's main metric over all languages."""
    import pandas as pd

    from mmbert.downstream.tasks import ClassifyTask, QaTask, RetrieveTask, TagTask

    main = {"classify": ClassifyTask, "tag": TagTask, "qa": QaTask, "retrieve": RetrieveTask}
    overall = table[table["language"] == "all"].set_index(["model", "task"])
    columns = {}
    for task in overall.index.get_level_values("task").unique():
        rows = overall.xs(task, level="task")
        metric = main[rows["type"].iloc[0]].main_metric
        columns[f"{task} {metric}"] = rows[metric]
    return pd.DataFrame(columns).rename_axis("checkpoint")
