"""The Hugging Face interop tests under transformers 4.x: the released mmBERT checkpoints were made with 4.x
and pyproject allows 4.48 on, while this environment runs 5.x (which the ordinary suite covers).

Each version's tests run in a side venv (tests.helpers.side_venv: this environment's packages with
transformers, tokenizers and huggingface_hub pinned over them) with pytest, and must all pass: exactly the
tests of those files that the default markers select, none skipped, REQUIRED among them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import REPO, run_command, side_env, side_venv

# export, import, parity at both RoPE bases, both config.json layouts, AutoModelForMaskedLM / AutoTokenizer
# loading, mmbert-convert in both directions.
INTEROP_TESTS = ("tests/checkpoint/test_hf.py", "tests/checkpoint/test_convert.py")
# The last 4.x release and the floor in pyproject.toml, each with the tokenizers and huggingface_hub it allows.
PINS = {
    "4.57.6": ("transformers==4.57.6", "tokenizers==0.22.2", "huggingface_hub==0.36.2"),
    "4.48.3": ("transformers==4.48.3", "tokenizers==0.21.4", "huggingface_hub==0.36.2"),
}
# Tests that must be among those run (and passed): each reads or writes what transformers does.
REQUIRED = {
    "tests/checkpoint/test_hf.py::test_padded_logits_equal_transformers",
    "tests/checkpoint/test_hf.py::test_set_rope_theta_matches_transformers_at_the_new_theta",
    "tests/checkpoint/test_hf.py::test_round_trips_reproduce_every_tensor",
    "tests/checkpoint/test_hf.py::test_save_and_load_round_trip_with_tokenizer",
    "tests/checkpoint/test_hf.py::test_saved_folder_loads_in_transformers_auto_classes",
    "tests/checkpoint/test_hf.py::test_either_config_layout_loads_with_mmberts_attention_pattern",
    "tests/checkpoint/test_hf.py::test_export_is_for_inference_and_reads_back_with_the_projects_training_flags",
    "tests/checkpoint/test_convert.py::test_to_hf_loads_in_transformers_with_the_same_logits",
    "tests/checkpoint/test_convert.py::test_from_hf_round_trips_every_tensor",
}


def junit_results(report: Path) -> dict[str, str]:
    """test id -> "passed", "failed", "error" or "skipped", from pytest's junit xml."""
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        results[f"{module}::{case.get('name')}"] = outcome
    return results


@pytest.mark.slow
@pytest.mark.parametrize("version", PINS)
def test_interop_tests_pass_under_transformers_4(version: str, tmp_path: Path) -> None:
    python = side_venv(*PINS[version])
    env = side_env()
    probe = run_command(
        python, "-c", "import transformers; print(transformers.__version__)", cwd=REPO, env=env, timeout=300
    )
    assert probe.stdout.strip() == version, probe.stdout + probe.stderr

    report = tmp_path / "junit.xml"
    proc = run_command(
        python, "-m", "pytest", "-q", f"--junitxml={report}", *INTEROP_TESTS, cwd=REPO, env=env, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    results = junit_results(report)
    assert {test.split("[")[0] for test in results} >= REQUIRED
    assert set(results.values()) == {"passed"}, {t: r for t, r in results.items() if r != "passed"}
