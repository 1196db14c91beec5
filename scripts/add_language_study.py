"""Is a language added only in the decay phase learned? The toy study on real text, on CPU, in minutes.

    python scripts/add_language_study.py [--root outputs/add_language_study] [--locale-dir /usr/share/locale]

1. corpus/: real sentences from the machine's gettext catalogs (:mod:`mmbert.analysis.locale_corpus`), in
   FineWeb2 layout, train and test split by message; corpus/retrieve.jsonl: English -> language test pairs.
2. base/: the tiny model pre-trained (``train.py experiment=toy phase=pretrain``) on BASE_LANGUAGES, without
   the added language.
3. decay-without/ and decay-with/: two decays from the base's last checkpoint, on the same languages; the
   second with ADDED at ADDED_SHARE of its tokens (``data_mix.add``).
4. merges/ties/: decay-with merged into the base (TIES, half of the decay's task vector).
5. results.csv / results.json: per language and checkpoint, held-out MLM loss and accuracy (15% mask, the same
   masks for every checkpoint) and English -> language retrieval accuracy@1 (mean-pooled embeddings).

CONTROL (another script, never trained) separates learning the added language from the general drop in loss
any decay brings; RELATED (a language close to one of the base's, never trained) shows transfer.

Nothing is lost on interruption: rerun the same command. A finished stage (its hf/ export, merge folder,
corpus.json or results.json) is skipped; an interrupted training run resumes from its last.ckpt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stages import StageFailed, call, exported, header

BASE_LANGUAGES = ("eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl", "cmn_Hani")
# Greek: a script none of the base's languages is written in, so whatever the model knows of it after the
# decay it learned there; the sample tokenizer covers it (it was trained on Greek among the sample's 27).
ADDED = "ell_Grek"
CONTROL = "kor_Hang"
RELATED = "ukr_Cyrl"
RETRIEVE_LANGUAGES = (ADDED, CONTROL, "deu_Latn", "rus_Cyrl")
ROLES = {**dict.fromkeys(BASE_LANGUAGES, "base"), ADDED: "added", CONTROL: "control", RELATED: "related"}
# The scale: about 6.5 minutes in all on two (loaded) CPU cores. A base of 600K tokens was still in a phase
# of fast, uneven progress (final val/loss 4.4 or 5.2 for two corpora differing only in some English
# messages); 900K tokens reach 3.7. The added language gets 30% of the decay's 300K tokens: at 20% of 250K
# its accuracy rose about as much as the control's. At the paper's shares the tiny model would see too few of
# its tokens, at the decay's 5% masking, to show anything.
PRETRAIN_SCALE = 0.3  # x 3M tokens
DECAY_SCALE = 0.3  # x 1M tokens
ADDED_SHARE = 0.3
EVAL_DOCS = 64  # test documents a language for the MLM evaluation (8 messages each)
RETRIEVE_PAIRS = 200  # per language: chance is 1/200
CHECKPOINTS = {"base": "base/hf", "decay without": "decay-without/hf", "decay with": "decay-with/hf"}
CHECKPOINTS["merge"] = "merges/ties"
# Half of the task vector, as the toy recipe's TIES (scripts/toy_recipe.py); at TIES's default density of 1 a
# merge of one model into its own base is that model again, and would show nothing.
TIES_DENSITY = 0.5


def build_corpus(root: Path, locale_dir: Path) -> None:
    from mmbert.analysis.locale_corpus import MANIFEST_FILE, build_locale_corpus

    corpus = root / "corpus"
    header(f"corpus: {corpus} (from {locale_dir})")
    if (corpus / MANIFEST_FILE).is_file():
        print(f"{corpus / MANIFEST_FILE} exists: skipped", flush=True)
        return
    languages = [*BASE_LANGUAGES, ADDED, CONTROL, RELATED]
    built = build_locale_corpus(
        corpus, languages, RETRIEVE_LANGUAGES, locale_dir=locale_dir, retrieve_pairs=RETRIEVE_PAIRS
    )
    for lang in languages:
        print(f"{lang}: {built.messages[lang]} messages, {built.documents[lang]} documents", flush=True)


def train(name: str, root: Path, overrides: list[str], extra: list[str]) -> None:
    """One ``train.py experiment=toy`` run into root/name, on the corpus's base languages; resumed from its
    last checkpoint if it has one, skipped if it was exported."""
    run_dir = root / name
    header(f"{name}: {run_dir}")
    if exported(run_dir):
        print(f"{run_dir / 'hf'} exists: skipped", flush=True)
        return
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = [f"ckpt_path={last}"] if last.is_file() else []
    mix = [
        "data_mix=folder",
        f"data_mix.path={root / 'corpus'}",
        f"data_mix.languages=[{','.join(BASE_LANGUAGES)}]",
    ]
    call(name, ["train.py", "experiment=toy", *mix, *overrides, *resume, f"hydra.run.dir={run_dir}", *extra])


def merge(root: Path) -> None:
    output = root / "merges" / "ties"
    header(f"merges/ties: {output}")
    if output.is_dir():  # merge.py renames a finished merge into place
        print(f"{output} exists: skipped", flush=True)
        return
    models = f"models=[{root / 'decay-with' / 'hf'}]"
    call(
        "merges/ties",
        [
            "merge.py",
            "method=ties",
            f"base={root / 'base' / 'hf'}",
            models,
            f"density={TIES_DENSITY}",
            f"output_dir={output}",
        ],
    )


def evaluate(root: Path) -> dict:
    """Every checkpoint's per-language MLM loss / accuracy and retrieval accuracy@1 (results.json)."""
    from mmbert.analysis.evaluation import evaluate_checkpoints
    from mmbert.analysis.locale_corpus import RETRIEVE_FILE
    from mmbert.data.eval_texts import read_test_texts
    from mmbert.downstream.run import evaluate as run_task
    from mmbert.downstream.tasks import RetrieveTask

    header(f"evaluation: {root / 'results.json'}")
    checkpoints = {name: root / path for name, path in CHECKPOINTS.items()}
    texts = read_test_texts(root / "corpus", list(ROLES), max_docs=EVAL_DOCS)
    mlm = evaluate_checkpoints(checkpoints, texts, progress=False)
    task = RetrieveTask("retrieve", test_file=str(root / "corpus" / RETRIEVE_FILE), max_len=128)
    retrieve = {}
    for name, path in checkpoints.items():
        per_language = run_task(task, path)["metrics"]["per_language"]
        retrieve[name] = {lang: m["accuracy@1"] for lang, m in per_language.items()}
    return {
        "languages": ROLES,
        "checkpoints": list(CHECKPOINTS),
        "added": ADDED,
        "control": CONTROL,
        "settings": {
            "base_languages": list(BASE_LANGUAGES),
            "pretrain_token_scale": PRETRAIN_SCALE,
            "decay_token_scale": DECAY_SCALE,
            "added_share": ADDED_SHARE,
            "eval_docs": EVAL_DOCS,
            "retrieve_pairs": RETRIEVE_PAIRS,
            "ties_density": TIES_DENSITY,
        },
        "loss": {c: {lang: float(mlm.loc[c, ("loss", lang)]) for lang in ROLES} for c in CHECKPOINTS},
        "accuracy": {c: {lang: float(mlm.loc[c, ("accuracy", lang)]) for lang in ROLES} for c in CHECKPOINTS},
        "retrieve": retrieve,
    }


def table_rows(results: dict) -> list[dict]:
    """One row per language: its role, then each metric under each checkpoint (``loss: base``, ...)."""
    rows = []
    for lang, role in results["languages"].items():
        row = {"language": lang, "role": role}
        for metric in ("loss", "accuracy", "retrieve"):
            for ckpt in results["checkpoints"]:
                row[f"{metric}: {ckpt}"] = results[metric][ckpt].get(lang)
        rows.append(row)
    return rows


def write_results(root: Path, results: dict) -> None:
    import csv

    (root / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    rows = table_rows(results)
    with open(root / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def summary(results: dict, total_s: float) -> None:
    header("summary: held-out MLM loss / accuracy and retrieval accuracy@1 (English -> language)")
    ckpts = results["checkpoints"]
    print(f"{'language':<10} {'role':<8} " + " ".join(f"{c:>22}" for c in ckpts))
    for row in table_rows(results):
        cells = []
        for c in ckpts:
            r = row[f"retrieve: {c}"]
            cells.append(
                f"{row[f'loss: {c}']:.2f} / {row[f'accuracy: {c}']:.3f} / "
                + ("  -  " if r is None else f"{r:.2f}")
            )
        print(f"{row['language']:<10} {row['role']:<8} " + " ".join(f"{cell:>22}" for cell in cells))
    loss = results["loss"]
    for lang in (results["added"], results["control"]):
        drop_with = loss["base"][lang] - loss["decay with"][lang]
        drop_without = loss["base"][lang] - loss["decay without"][lang]
        print(f"{lang}: loss drop with it {drop_with:.2f}, without it {drop_without:.2f}")
    print(f"total {total_s:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=Path("outputs/add_language_study"), help="where it all goes"
    )
    parser.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"), help="gettext catalogs")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every train.py call")
    args = parser.parse_args()
    root = args.root.resolve()  # the commands run from the repository root, not from the caller's folder
    start = time.monotonic()
    base_ckpt = root / "base" / "checkpoints" / "last.ckpt"
    decay = ["phase=decay", f"token_scale={DECAY_SCALE}", f"model.init_from={base_ckpt}"]
    added = f"+data_mix.add={{{ADDED}: {{path: {root / 'corpus' / ADDED}, share: {ADDED_SHARE}}}}}"
    try:
        build_corpus(root, args.locale_dir)
        train("base", root, ["phase=pretrain", f"token_scale={PRETRAIN_SCALE}"], args.overrides)
        train("decay-without", root, decay, args.overrides)
        train("decay-with", root, [*decay, added], args.overrides)
        merge(root)
    except StageFailed as err:
        print(f"\nadd_language_study: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nadd_language_study: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    results_file = root / "results.json"
    if results_file.is_file():
        results = json.loads(results_file.read_text())
    else:
        results = evaluate(root)
        write_results(root, results)
    summary(results, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
