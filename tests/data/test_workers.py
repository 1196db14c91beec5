"""Nothing left running: a run killed with ``SIGKILL`` takes its worker processes with it."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import survivors_of_sigkill, write_many_files

from mmbert.data.workers import die_with_parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

# Killed as its workers start their row streams (seconds of reading and tokenizing, during which torch's own
# watchdog, polled every 5 s by an idle worker, does not look).
LOADER = """
from mmbert.data import MLMDataModule, SampleMix
dm = MLMDataModule(SampleMix(subset="pretrain"), seq_len=64, rows_per_device=4, tau=0.7, mask_ratio=0.3,
                   num_workers=2, val_docs_per_lang=0)
for _ in dm.train_batches():
    pass
"""
PR_GET_PDEATHSIG = 2  # <linux/prctl.h>


def test_prepare_killed_leaves_no_worker(tmp_path: Path) -> None:
    write_many_files(tmp_path / "src", 8)
    cmd = [sys.executable, "-m", "mmbert.cli.prepare", f"source={tmp_path / 'src'}", f"out={tmp_path / 'mds'}",
           "tokenizer=data/tokenizer", "workers=2", "batch=16"]  # fmt: skip
    assert survivors_of_sigkill(cmd, 3) == {}  # two pool workers and the progress queue's manager


def test_training_dataloader_killed_leaves_no_worker() -> None:
    assert survivors_of_sigkill([sys.executable, "-c", LOADER], 2) == {}


def test_outside_a_worker_nothing_changes() -> None:
    die_with_parent()  # the main process has no multiprocessing parent: no signal set, no exit
    libc, signum = ctypes.CDLL(None), ctypes.c_int(-1)
    assert libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(signum), 0, 0, 0) == 0 and signum.value == 0
