"""Candidate reproducer: rare SIGABRT at interpreter exit of two-rank gloo FSDP2 processes (torch 2.13.0+cpu).

Pure torch. The launcher runs ``--trials`` trials, ``--parallel`` at a time (to load the CPU), each starting
two fresh ranks (this file with ``--rank``; MASTER_ADDR/PORT, RANK, WORLD_SIZE in the environment, a free port
per trial). Each rank inits gloo, ``fully_shard``s a stack of small ``nn.Linear`` layers (many small params),
runs a few forward/backward/AdamW steps (FSDP2 all-gathers and reduce-scatters), ends on an async
coalesced all-gather (``all_gather_coalesced`` -> gloo ``AsyncAllgatherCoalescedWork``), waits on it,
calls ``destroy_process_group()`` and returns normally from ``main``. A trial aborts when a rank exits with
SIGABRT (returncode -6) or prints "terminate called". ``--os-exit`` ends ranks with ``os._exit(0)`` after
destroy instead (the workaround in tests/helpers.py ``leave_process_group``), which skips finalization.

Run: ``python scripts/repro_gloo_exit_abort.py --trials 100 [--os-exit]``

Measured on this machine (2-core CPU, loaded, torch 2.13.0+cpu, 2 trials at a time): plain mode 5/100 trials
aborted (7 ranks: "terminate called without an active exception", returncode -6, no Python traceback);
``--os-exit`` 0/100 (and 0/40 in an earlier run).

Report (from a core dump of the project's Lightning FSDP2 test worker, 2 aborts in ~75 runs): ProcessGroupGloo
worker thread destroys a completed Work (AsyncAllgatherCoalescedWork) holding a Python-owned tensor after
Python-side wait() returned; if this races with Py_FinalizeEx, ConcretePyInterpreterVTable::decref ->
gil_scoped_acquire -> take_gil -> PyThread_exit_thread -> forced unwind through a noexcept destructor ->
std::terminate ("terminate called without an active exception", SIGABRT). The group's worker threads are
still alive after destroy_process_group(). Related upstream thread: pytorch#190489.
"""

import argparse
import os
import socket
import subprocess
import sys

import torch


def rank_main(os_exit: bool) -> None:
    import warnings

    import torch.distributed as dist
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    warnings.filterwarnings("ignore", category=FutureWarning)  # all_gather_coalesced is deprecated
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(24)])
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        opt.zero_grad()
    # Finish right after an async coalesced all-gather whose Work the gloo worker thread releases last.
    ins = [torch.randn(8) for _ in range(64)]
    outs = [[torch.empty(8) for _ in range(64)] for _ in range(2)]
    dist.all_gather_coalesced(outs, ins, async_op=True).wait()
    dist.destroy_process_group()
    if os_exit:
        os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_trial(os_exit: bool) -> list[subprocess.Popen]:
    port, procs = free_port(), []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
        cmd = [sys.executable, __file__, "--rank"] + (["--os-exit"] if os_exit else [])
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    return procs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--os-exit", action="store_true")
    p.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank:
        return rank_main(args.os_exit)
    aborts = failures = done = 0
    while done < args.trials:
        batch = [start_trial(args.os_exit) for _ in range(min(args.parallel, args.trials - done))]
        for procs in batch:
            outs = [(pr.communicate()[0], pr.returncode) for pr in procs]
            aborted = any(rc == -6 or "terminate called" in out for out, rc in outs)
            aborts += aborted
            failures += not aborted and any(rc != 0 for _, rc in outs)
            if aborted or any(rc != 0 for _, rc in outs):
                print(
                    f"trial {done}: returncodes {[rc for _, rc in outs]}\n"
                    + "".join(o for o, _ in outs)[-2000:]
                )
            done += 1
    print(
        f"torch {torch.__version__} os_exit={args.os_exit} trials={done} aborts={aborts} other_failures={failures}"
    )


if __name__ == "__main__":
    main()
