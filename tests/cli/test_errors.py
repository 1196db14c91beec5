"""Errors a person reads: a bad key or file makes train.py, merge.py and `mmbert-convert` print one
line naming it and exit with status 2; HYDRA_FULL_ERROR=1 shows the traceback instead. Newcomers' mistakes
among them: a misspelt override, resuming a checkpoint of another model size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import CONF, FAST, REPO, compose_train

from mmbert.cli.errors import find_user_error
from mmbert.cli.overrides import check_override_keys
from mmbert.errors import CheckpointError, ConfigError, DataError, MergeError, NonFiniteLossError
from mmbert.train.run import run

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def _run(*args: str, cwd, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _one_line_error(proc: subprocess.CompletedProcess, prog: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "recipe.mask_ratio=1.5",
            "mask_schedule: mask ratio start must be in (0, 1), got 1.5",
        ),
        ("data_mix=folder data_mix.path=/no/such/corpus", "/no/such/corpus"),  # DataError, inside instantiate
    ],
)
def test_train_py_config_and_data_errors_are_one_line(tmp_path, override, message):
    args = [*override.split(), f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=1"]
    line = _one_line_error(_run(str(REPO / "train.py"), *args, cwd=tmp_path), "train.py")
    assert message in line


def test_hydra_full_error_shows_the_traceback(tmp_path):
    proc = _run(str(REPO / "train.py"), "model.init_from=/no/such.ckpt", f"hydra.run.dir={tmp_path / 'r'}",
                cwd=tmp_path, env=ENV | {"HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_merge_and_convert_errors_are_one_line(tmp_path):
    missing = tmp_path / "missing.ckpt"
    merge = _run(str(REPO / "merge.py"), f"models=[{missing}]", "method=linear", f"output_dir={tmp_path / 'o'}",
                 f"hydra.run.dir={tmp_path / 'h'}", cwd=tmp_path)  # fmt: skip
    assert f"input {missing} does not exist" in _one_line_error(merge, "merge.py")
    convert = _run("-m", "mmbert.cli.convert", "to-hf", str(missing), str(tmp_path / "hf"), cwd=tmp_path)
    assert str(missing) in _one_line_error(convert, "mmbert-convert")


@pytest.mark.parametrize("kind", [ConfigError, DataError, CheckpointError, MergeError])
def test_each_user_error_is_found_behind_a_wrapper(kind):
    cause = kind("bad value")
    wrapped = RuntimeError("instantiate failed")
    wrapped.__cause__ = cause
    assert find_user_error(wrapped) is cause
    assert find_user_error(NonFiniteLossError("loss is nan")) is None  # a failure of the run, not a setting


def test_merge_key_of_another_method_is_one_line(tmp_path):
    merge = _run(str(REPO / "merge.py"), "method=linear", "models=[a,b]", "density=0.4", f"output_dir={tmp_path / 'o'}",
                 f"hydra.run.dir={tmp_path / 'h'}", cwd=tmp_path)  # fmt: skip
    assert "density=0.4 does not apply to method=linear" in _one_line_error(merge, "merge.py")


@pytest.mark.parametrize(
    ("script", "override", "closest"),
    [
        ("train.py", "optimzer.lr=1e-3", "optimizer.lr"),
        ("train.py", "model.config.hiden_size=96", "model.config.hidden_size"),
        ("evaluate.py", "seeed=1", "seed"),
        ("merge.py", "densty=0.3", "density"),
    ],
)
def test_a_misspelt_override_names_the_closest_key(tmp_path, script, override, closest):
    proc = _run(str(REPO / script), override, f"hydra.run.dir={tmp_path / 'h'}", cwd=tmp_path)
    line = _one_line_error(proc, script)
    assert f"{override}: " in line and f"did you mean {closest}? " in line and f"+{override}" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["+optimzer.lr=1e-3"],  # an append adds a key on purpose
        ["model=small", "model.config.hidden_size=96"],  # a key of the chosen group
        ["-m", "phase=pretrain,decay", "optimizer.lr=1e-3,2e-3", "hydra.sweep.subdir=${phase.name}"],
        ["~callbacks.batch_warmup", "--cfg", "job"],
        ["--help"],
    ],
)
def test_overrides_hydra_composes_pass_the_key_check(argv):
    check_override_keys(str(CONF), "train", argv)


def test_a_misspelt_key_in_a_sweep_is_named():
    with pytest.raises(ConfigError, match=r"^optimzer\.lr=1e-3,2e-3: .*did you mean optimizer\.lr\?"):
        check_override_keys(str(CONF), "train", ["-m", "phase=pretrain,decay", "optimzer.lr=1e-3,2e-3"])


def test_resuming_a_checkpoint_of_another_size_is_one_line_before_the_data(tmp_path):
    ckpt = tmp_path / "tiny" / "checkpoints" / "last.ckpt"
    run(compose_train([*FAST, "trainer.max_steps=1"], output_dir=tmp_path / "tiny"))
    # A missing corpus would fail when the data is set up: the checkpoint must be refused before that.
    args = [*FAST, "model.config.hidden_size=96", f"ckpt_path={ckpt}", "data_mix=folder",
            "data_mix.path=/no/such/corpus", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    line = _one_line_error(_run(str(REPO / "train.py"), *args, cwd=tmp_path), "train.py")
    assert line == (
        f"train.py: error: model.embeddings.tok_embeddings.weight from ckpt_path={ckpt} has shape "
        "(8192, 128), the model needs (8192, 96)"
    )
