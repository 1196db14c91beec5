"""mmbert.downstream and evaluate.py: metrics (exact values), data in jsonl / parquet / csv and through
datasets.load_dataset, bad-input errors before training, short fine-tunes of a tiny model on tasks built
from the sample corpus's real sentences, the CLI and the multirun table."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

from mmbert.checkpoint.convert import hf_to_checkpoint
from mmbert.downstream import (
    ClassifyTask,
    QaTask,
    RetrieveTask,
    TagTask,
    bio_entities,
    entity_f1,
    evaluate,
    exact_match,
    load_encoder,
    macro_f1,
    normalize_answer,
    retrieval_accuracy,
    squad_scores,
    token_f1,
)
from mmbert.downstream.data import Fields, read_split
from mmbert.downstream.packing import pack, segment_mean
from mmbert.downstream.tasks.qa import _segment_logsumexp
from mmbert.downstream.toy import (
    qa_rows,
    retrieve_rows,
    script_rows,
    tag_rows,
    write_rows,
    write_splits,
)
from mmbert.errors import ConfigError, DataError

CORPUS = REPO / "data" / "sample"
PARALLEL = CORPUS / "parallel.jsonl"
# One language per script: script identification is a task a tiny model learns in seconds.
SCRIPT_LANGS = [
    "eng_Latn",
    "rus_Cyrl",
    "arb_Arab",
    "cmn_Hani",
    "hin_Deva",
    "ell_Grek",
    "heb_Hebr",
    "tha_Thai",
]
FAST = {"epochs": 4, "lr": 2e-3, "batch_tokens": 1024, "warmup_ratio": 0.0}


# ---- metrics -------------------------------------------------------------------------------------------------


def test_accuracy_and_macro_f1_exact():
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "b"]
    # a: tp 1 fn 1 -> 2/3; b: tp 1 fp 2 -> 2/4; c: fn 1 -> 0
    assert macro_f1(pred, gold) == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert macro_f1(["x", "x"], ["a", "a"]) == 0.0  # a class predicted but never gold counts as 0


def test_bio_entities_follow_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "B-PER"]
    assert bio_entities(tags) == {("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5), ("ORG", 6, 6), ("PER", 7, 7)}


def test_entity_f1_exact():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG"]]  # PER span wrong; LOC, ORG right
    scores = entity_f1(pred, gold)
    assert scores == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
    assert entity_f1([["O"]], [["O"]])["f1"] == 0.0


def test_squad_normalisation_em_and_f1():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("«Tórshavn» — an island") == "tórshavn island"  # Unicode punctuation too
    assert exact_match("the Eiffel Tower.", ["Eiffel tower", "Paris"]) == 1.0
    # pred {in, paris}, gold {paris}: precision 1/2, recall 1 -> 2/3
    assert token_f1("in Paris", ["Paris"]) == pytest.approx(2 / 3)
    assert token_f1("Lyon", ["Paris"]) == 0.0
    assert squad_scores(["in Paris", "Paris"], [["Paris"], ["Paris"]]) == {
        "exact_match": 0.5,
        "f1": pytest.approx((2 / 3 + 1) / 2),
    }


def test_retrieval_accuracy_both_directions():
    src = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tgt = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.8, 1.0]])
    # src -> tgt: 0 -> t1 (cos 1 > t0) wrong; 1 -> t2 wrong; 2 -> t2 right: 1/3.
    # tgt -> src: t0 -> s0 right; t1 -> s0 wrong; t2 -> s2 right: 2/3.
    acc = retrieval_accuracy(src, tgt)
    assert acc["accuracy@1_src2tgt"] == pytest.approx(1 / 3)
    assert acc["accuracy@1_tgt2src"] == pytest.approx(2 / 3)
    assert acc["accuracy@1"] == pytest.approx(0.5)
    # A model that maps everything to one vector finds nothing (ties do not count).
    assert retrieval_accuracy(torch.ones(4, 3), torch.ones(4, 3))["accuracy@1"] == 0.0


def test_segment_mean_and_logsumexp_per_document():
    batch = pack([torch.tensor([1, 2, 3]), torch.tensor([4])])
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [7.0, -1.0]])
    assert torch.allclose(segment_mean(x, batch), torch.tensor([[2.0, 1.0], [7.0, -1.0]]))
    expected = torch.stack([x[:3].logsumexp(0), x[3:].logsumexp(0)])
    assert torch.allclose(_segment_logsumexp(x, batch), expected)


# ---- data ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_every_task_reads_the_same_rows_from_each_format(fmt, sentences, tmp_path):
    tasks = {
        "script": (script_rows(sentences), ClassifyTask.fields),
        "tag": (tag_rows(sentences), TagTask.fields),
        "qa": (qa_rows(sentences), QaTask.fields),
        "retrieve": (retrieve_rows(PARALLEL), RetrieveTask.fields),
    }
    for name, (rows, fields) in tasks.items():
        path = write_rows(rows, tmp_path / f"{name}.{fmt}")
        split = read_split("test", str(path), fields)
        assert len(split.rows) == len(rows)
        first = split.rows[0]
        for field in fields.required:
            head, _, rest = field.partition(".")
            want = rows[0][head][rest] if rest else rows[0][field]
            assert first[field] == want, (name, fmt, field)
        assert first["language"] == rows[0]["language"]


def test_hub_path_is_datasets_load_dataset_with_label_names(tmp_path):
    """A hub spec is a real datasets.load_dataset call (here the offline 'parquet' builder); ClassLabel tags
    come back as their names and ``language`` labels every row."""
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    data = {"tokens": [["Anna", "Olsen", "býr"], ["Vit", "eta"]], "ner_tags": [[1, 2, 0], [0, 0]]}
    datasets.Dataset.from_dict(data, features=features).to_parquet(tmp_path / "fo.parquet")
    spec = {
        "hub": "parquet",
        "data_files": str(tmp_path / "fo.parquet"),
        "split": "train",
        "language": "fao_Latn",
    }
    split = read_split("train", spec, TagTask.fields, {"tags": "ner_tags"})
    assert split.rows[0] == {
        "tokens": ["Anna", "Olsen", "býr"],
        "tags": ["B-PER", "I-PER", "O"],
        "language": "fao_Latn",
    }
    assert "parquet" in split.origin


# ---- bad input: errors before anything trains ---------------------------------------------------------------


def _files(tmp_path, rows_by_split, fmt="jsonl"):
    return {f"{s}_file": str(write_rows(rows, tmp_path / f"{s}.{fmt}")) for s, rows in rows_by_split.items()}


def test_missing_column_names_file_and_field(tmp_path):
    rows = [{"text": "Hello there.", "label": "Latn"}, {"text": "Привет.", "label": "Cyrl"}]
    files = _files(tmp_path, {"train": rows, "test": [{"text": "Hi."}]}, "csv")
    with pytest.raises(DataError, match=r"test split .*test\.csv: no column 'label' for field 'label'"):
        ClassifyTask("c", **files).load()


def test_label_unseen_in_training(tmp_path):
    rows = [{"text": "Hello there.", "label": "Latn"}, {"text": "Привет.", "label": "Cyrl"}]
    files = _files(tmp_path, {"train": rows, "test": [{"text": "مرحبا", "label": "Arab"}]})
    with pytest.raises(
        DataError, match=r"test split .*test\.jsonl: field 'label' has values never seen.*Arab"
    ):
        ClassifyTask("c", **files).load()


def test_empty_split(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    rows = [{"text": "Hello there.", "label": 0}, {"text": "Привет.", "label": 1}]
    files = _files(tmp_path, {"train": rows})
    with pytest.raises(DataError, match=r"test split .*empty\.jsonl: the split is empty"):
        ClassifyTask("c", test_file=str(tmp_path / "empty.jsonl"), **files).load()


def test_answer_outside_its_context(sentences, tmp_path):
    rows = qa_rows(sentences)[:3]
    rows[2] = {**rows[2], "answers": {"text": ["not in the context"], "answer_start": [5]}}
    files = _files(tmp_path, {"train": rows[:2], "test": rows})
    with pytest.raises(
        DataError, match=r"test split .*test\.jsonl: row 2: answer 'not in the context' is not at"
    ):
        QaTask("q", max_len=64, max_question_tokens=16, **files).load()


def test_unknown_language(sentences, tmp_path):
    rows = script_rows({k: sentences[k] for k in SCRIPT_LANGS[:2]})
    files = _files(tmp_path, {"train": rows, "test": rows})
    with pytest.raises(
        DataError, match=r"train split .*: task.train_languages names \['xxx_Latn'\].*'language'"
    ):
        ClassifyTask("c", train_languages=["xxx_Latn"], **files).load()


def test_tag_errors(tmp_path):
    good = [{"tokens": ["Anna", "býr"], "tags": ["B-PER", "O"]}]
    files = _files(tmp_path, {"train": good, "test": [{"tokens": ["a", "b"], "tags": ["O"]}]})
    with pytest.raises(DataError, match=r"test split .*: row 0: 2 tokens but 1 tags"):
        TagTask("t", **files).load()
    files = _files(tmp_path, {"train": good, "test": [{"tokens": ["a"], "tags": ["PER"]}]})
    with pytest.raises(DataError, match=r"row 0: field 'tags' has 'PER'"):
        TagTask("t", **files).load()


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"task.protocol"):
        ClassifyTask("c", protocol="few_shot")
    with pytest.raises(ConfigError, match=r"task.finetune.epochs"):
        ClassifyTask("c", finetune={"epochs": 0})
    with pytest.raises(ConfigError, match=r"task.train_file is required"):
        ClassifyTask("c", test_file="x.jsonl").load()
    with pytest.raises(DataError, match=r"task.test_file=.*nope.jsonl: no such file"):
        RetrieveTask("r", test_file=str(tmp_path / "nope.jsonl")).load()


# ---- fine-tuning and evaluation ------------------------------------------------------------------------------


def test_short_finetune_beats_chance_on_script_identification(tiny_hf, sentences, tmp_path):
    rows = script_rows({k: sentences[k] for k in SCRIPT_LANGS})
    files = {f"{s}_file": str(p) for s, p in write_splits(rows, tmp_path / "script", "parquet").items()}
    task = ClassifyTask("script", finetune=FAST, max_len=64, **files)
    result = evaluate(task, tiny_hf, seed=0, out_dir=tmp_path / "out")
    metrics = result["metrics"]
    chance = 1 / len(SCRIPT_LANGS)
    assert metrics["accuracy"] > 3 * chance, metrics
    assert 0 < metrics["macro_f1"] <= 1
    assert set(metrics["per_language"]) == set(SCRIPT_LANGS)
    assert sum(m["n"] for m in metrics["per_language"].values()) == metrics["n"]
    training = result["training"][0]
    assert training["best_epoch"] is not None and len(training["dev_scores"]) == training["epochs_run"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["task"] == "script" and saved["metrics"]["accuracy"] == metrics["accuracy"]


def test_in_language_protocol_trains_one_model_per_language(tiny_hf, sentences, tmp_path):
    rows = [
        dict(r, label="long" if len(r["text"]) > 30 else "short")
        for r in script_rows({k: sentences[k] for k in SCRIPT_LANGS[:2]})
    ]
    files = {f"{s}_file": str(p) for s, p in write_splits(rows, tmp_path / "len", "jsonl").items()}
    task = ClassifyTask("len", protocol="in_language", finetune={**FAST, "epochs": 1}, max_len=64, **files)
    result = evaluate(task, tiny_hf)
    assert [t["languages"] for t in result["training"]] == [["eng_Latn"], ["rus_Cyrl"]]


def test_tag_finetune_trains_and_finds_entities(tiny_hf, sentences, tmp_path):
    """A random tiny model cannot know whether an unseen word is capitalised, so this asserts training works
    and whole entities are found (all-O scores 0), not a level; pre-trained checkpoints do better."""
    langs = ["eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl"]
    files = {
        f"{s}_file": str(p)
        for s, p in write_splits(tag_rows({k: sentences[k] for k in langs}), tmp_path / "tag", "csv").items()
    }
    task = TagTask("tag", finetune={**FAST, "epochs": 6}, max_len=64, **files)
    result = evaluate(task, tiny_hf)
    metrics, losses = result["metrics"], result["training"][0]["train_loss"]
    assert metrics["f1"] > 0, metrics
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(metrics["per_language"]) == set(langs)


def test_qa_windows_cover_long_contexts_and_score(tiny_hf, sentences, tmp_path):
    rows = qa_rows({k: sentences[k] for k in ["eng_Latn", "deu_Latn"]})
    files = {f"{s}_file": str(p) for s, p in write_splits(rows, tmp_path / "qa", "parquet").items()}
    # 32 tokens hold the question and a part of each context only: several windows per question.
    task = QaTask(
        "qa", max_len=32, doc_stride=8, max_question_tokens=8, finetune={**FAST, "epochs": 2}, **files
    )
    _, tok = load_encoder(tiny_hf)
    splits = task.load()
    windows = task.encode(splits.test.rows, tok, False)
    assert len(windows) > len(splits.test.rows)
    in_window = [w for w in windows if w.start > 0]
    assert in_window  # the answer's tokens decode to the answer
    w = in_window[0]
    row = splits.test.rows[w.row]
    a, b = w.offsets[w.start - w.context_from][0], w.offsets[w.end - w.context_from][1]
    assert row["context"][a:b].strip() == row["answers.text"][0]
    metrics = evaluate(task, tiny_hf)["metrics"]
    assert 0 <= metrics["exact_match"] <= metrics["f1"] <= 1
    assert set(metrics["per_language"]) == {"eng_Latn", "deu_Latn"}


def test_lightning_checkpoint_loads_with_a_tokenizer(tiny_hf, tmp_path):
    ckpt = hf_to_checkpoint(tiny_hf, tmp_path / "w.ckpt")  # weights only: no tokenizer recorded
    with pytest.raises(ConfigError, match=r"has no tokenizer; set model.tokenizer"):
        load_encoder(ckpt)
    model, _ = load_encoder(ckpt, tokenizer=REPO / "data" / "tokenizer")
    reference, _ = load_encoder(tiny_hf)
    assert torch.equal(model.model.layers[0].attn.Wqkv.weight, reference.model.layers[0].attn.Wqkv.weight)


# ---- the command line ----------------------------------------------------------------------------------------


def _evaluate_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_classify_and_retrieve(tiny_hf, sentences, tmp_path):
    rows = script_rows({k: sentences[k] for k in SCRIPT_LANGS})
    split_files = write_splits(rows, tmp_path / "script", "jsonl")
    out = tmp_path / "classify"
    proc = _evaluate_py(
        "task=classify",
        f"model.path={tiny_hf}",
        f"task.train_file={split_files['train']}",
        f"task.test_file={split_files['test']}",
        "task.finetune.epochs=1",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "classify" and result["model"] == str(tiny_hf)
    assert {"accuracy", "macro_f1", "per_language"} <= set(result["metrics"])

    test = write_rows(retrieve_rows(PARALLEL), tmp_path / "bitext.csv")
    out = tmp_path / "retrieve"
    proc = _evaluate_py(
        "task=retrieve",
        f"model.path={tiny_hf}",
        f"task.test_file={test}",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    per = metrics["per_language"]["fao_Latn"]
    assert per["accuracy@1"] == pytest.approx((per["accuracy@1_src2tgt"] + per["accuracy@1_tgt2src"]) / 2)
    assert per["n"] == 12 and len(metrics["per_language"]) == 26


@pytest.mark.slow
def test_cli_bad_input_is_one_line_exit_2(tiny_hf, tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"source": "a"}) + "\n")
    proc = _evaluate_py(
        "task=retrieve", f"model.path={tiny_hf}", f"task.test_file={tmp_path / 't.jsonl'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "evaluate.py: error: test split" in proc.stderr and "field 'target'" in proc.stderr


def test_multirun_writes_a_results_table(tiny_hf, tmp_path):
    test = write_rows(retrieve_rows(PARALLEL)[:48], tmp_path / "bitext.jsonl")
    ckpt = hf_to_checkpoint(tiny_hf, tmp_path / "w.ckpt")
    sweep = tmp_path / "sweep"
    proc = _evaluate_py(
        "-m",
        "task=retrieve",
        f"model.path={tiny_hf},{ckpt}",
        f"model.tokenizer={REPO / 'data' / 'tokenizer'}",
        f"task.test_file={test}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One folder per job right under the sweep, whatever '/' the model paths hold.
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0_task=retrieve", "1_task=retrieve"]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert {r["model"] for r in rows} == {str(tiny_hf), str(ckpt)}
    overall = [r for r in rows if r["language"] == "all"]
    assert len(overall) == 2 and overall[0]["accuracy@1"] == overall[1]["accuracy@1"]  # same weights
    assert len(rows) == 2 * (1 + 4)  # 48 rows = 4 languages x 12


def test_task_configs_compose(tmp_path):
    """Every conf/task file composes and instantiates (the benchmark ones name their hub datasets)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    names = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
    assert {"classify", "tag", "qa", "retrieve"} <= set(names)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for name in names:
            cfg = compose(config_name="eval", overrides=[f"task={name}", "model.path=x"])
            task = instantiate(OmegaConf.to_container(cfg.task, resolve=True), _convert_="all")
            assert task.name == name
            if name not in {"classify", "tag", "qa", "retrieve"}:
                assert isinstance(task.files["test"], list | dict) and "hub" in json.dumps(task.files["test"])
    GlobalHydra.instance().clear()


def test_read_split_limit_and_fields(tmp_path):
    path = write_rows([{"text": f"s{i}", "label": i % 2} for i in range(10)], tmp_path / "x.jsonl")
    assert len(read_split("train", str(path), Fields(("text", "label")), limit=3).rows) == 3


def test_language_from_a_field_and_fixed_languages(tmp_path):
    rows = [
        {"id": "finnish-1", "source": "Hyvää huomenta.", "target": "Good morning."},
        {"id": "english-7", "source": "Hello.", "target": "Hi."},
    ]
    path = str(write_rows(rows, tmp_path / "x.jsonl"))
    rule = {"field": "id", "regex": "^([a-z]+)-", "names": {"finnish": "fin_Latn"}}
    split = read_split("test", {"path": path, "language_from": rule}, RetrieveTask.fields)
    assert [r["language"] for r in split.rows] == ["fin_Latn", "english"]  # unmapped codes are kept
    split = read_split("test", [{"path": path, "language": "fao_Latn"}, path], RetrieveTask.fields)
    assert [r["language"] for r in split.rows] == ["fao_Latn", "fao_Latn", "und", "und"]
    with pytest.raises(DataError, match=r"row 0: field 'id'='finnish-1' does not match language_from.regex"):
        read_split(
            "test", {"path": path, "language_from": {"field": "id", "regex": "^x"}}, RetrieveTask.fields
        )


def test_in_language_needs_training_rows_in_every_test_language(sentences, tmp_path):
    rows = script_rows({k: sentences[k] for k in SCRIPT_LANGS[:3]})
    train = [r for r in rows if r["language"] != "arb_Arab"]
    files = _files(tmp_path, {"train": train, "test": rows})
    with pytest.raises(DataError, match=r"in_language needs training rows.*\['arb_Arab'\]"):
        ClassifyTask("c", protocol="in_language", **files).load()
