"""scripts/add_language_study.py end to end at its default scale (slow: about 7 minutes on a 2-core CPU): the
paper's finding on real text, a language added only in the decay is learned, and the merge keeps it.

The study runs once per session in conftest.py's ``add_language_study_root`` fixture (or reuses
``MMBERT_STUDY_ROOT``); notebook 06 reads the same root.
"""

from __future__ import annotations

import csv
import json

import pytest

pytestmark = pytest.mark.slow


def test_a_language_added_only_in_the_decay_is_learned(add_language_study_root):
    results = json.loads((add_language_study_root / "results.json").read_text())
    loss, accuracy = results["loss"], results["accuracy"]
    added, control = results["added"], results["control"]

    def drop(lang: str, ckpt: str) -> float:
        return loss["base"][lang] - loss[ckpt][lang]

    # Measured (seed 21): the added language's loss falls 12.3 with the decay that has it, 0.2 without it, the
    # control's 1.6 and 0.0; its accuracy is 0.110 against 0.050 (the control's 0.173 and 0.154). The margins
    # leave room for other seeds, machines and versions.
    extra = drop(added, "decay with") - drop(added, "decay without")
    assert extra > 4, results
    assert extra > 3 * (drop(control, "decay with") - drop(control, "decay without")), results
    assert accuracy["decay with"][added] > accuracy["decay without"][added] + 0.015, results
    # The TIES merge (half of the task vector) keeps most of the loss gain: 88% (seed 21) and 87% (seed 22).
    # Not the accuracy gain (0.041 and 0.040, below the base's 0.066 and 0.045), as on the toy recipe.
    assert drop(added, "merge") > 0.5 * drop(added, "decay with"), results

    rows = list(csv.DictReader((add_language_study_root / "results.csv").open()))
    assert [r["language"] for r in rows] == list(results["languages"])
    assert all(float(r[f"loss: {c}"]) > 0 for r in rows for c in results["checkpoints"])
    # Retrieval pools of RETRIEVE_PAIRS pairs a language (chance 1 / 200).
    assert set(results["retrieve"]["base"]) == {added, control, "deu_Latn", "rus_Cyrl"}
