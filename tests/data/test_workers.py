"""Nothing left running: a run killed with ``SIGKILL`` takes its worker processes with it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import REPO, write_many_files

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
SURVIVAL_S = 3.0  # prctl kills in milliseconds; torch's own watchdog polls every 5 s


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` (every thread's), each with its start time to tell it from reuse."""
    kids = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if start := start_time(int(child)):
                kids[int(child)] = start
    return kids


def start_time(pid: int) -> str | None:
    """``pid``'s start time, or None once it is gone or a zombie (an orphan's reaper may be slow)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in "ZX" else fields[19]


def survivors_of_sigkill(cmd: list[str], n_workers: int) -> dict[int, str]:
    """Starts ``cmd``, waits for its ``n_workers`` children, kills it alone; the children alive after that."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(kids := children(proc.pid)) < n_workers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(kids) == n_workers and proc.poll() is None, (kids, proc.returncode)
        proc.kill()  # the parent only, as the OOM killer does
        assert proc.wait() == -signal.SIGKILL
        deadline = time.monotonic() + SURVIVAL_S
        while any(start_time(pid) == s for pid, s in kids.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {pid: s for pid, s in kids.items() if start_time(pid) == s}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a failing run left behind


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
