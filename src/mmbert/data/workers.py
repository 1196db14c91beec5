"""Worker processes that end with their parent: nothing is left running after a run is killed.

When a parent dies by ``SIGKILL`` (or the OOM killer) its children are only reparented: ``prepare``'s
progress-queue manager serves for ever, a busy pool worker tokenizes its whole file for nobody, and a
DataLoader worker looks at its parent only when idle (torch's watchdog, every 5 s). :func:`die_with_parent`,
run first in each of them (the manager's and the pool's initializer, the training DataLoader's
``worker_init_fn``), asks Linux to ``SIGKILL`` the process the moment its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(worker_id: int | None = None) -> None:
    """Makes this multiprocessing child die with the process that started it (Linux; no-op elsewhere).

    ``SIGKILL``, not ``SIGTERM``: the parent is gone, so there is nothing to hand results to, and a signal
    handler inherited from it (Lightning installs some) must not keep the worker alive. ``worker_id`` lets
    it be a DataLoader ``worker_init_fn`` as is. Linux sends the signal when the *thread* that forked the
    worker exits, so workers must be started by a thread that lives as long as the process (the main
    thread, as for both users here).
    """
    parent = mp.parent_process()
    if sys.platform != "linux" or parent is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died between the fork and the prctl: then no signal comes, and we were reparented.
    if os.getppid() != parent.pid:
        os._exit(1)
