"""Exact resumption: the data state in checkpoints, per rank, and the checks that it fits the run.

The state of one rank (:meth:`mmbert.data.MLMDataModule.state_dict`): ``version``, what must not change
(languages, row length, seed, workers, the mixture's key), and the stream's position
(:meth:`mmbert.data.steps.TrainStream.state`: per dataloader worker its latest snapshot and the rows consumed
since, the rows consumed, the masking RNG, the realised tokens) plus the mask ratio and the rows per step.
In DDP every rank's state is gathered (Lightning saves rank 0's copy) and each rank restores its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mmbert.errors import DataError

STATE_VERSION = 2  # 2: rows per optimizer step (batch-size warmup) instead of per micro-batch


def portable(obj: Any, to_torch: bool) -> Any:
    """Worker snapshots hold numpy arrays; checkpoints load with ``weights_only=True``, which takes tensors."""
    if to_torch and isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if to_torch and isinstance(obj, np.generic):
        return obj.item()
    if not to_torch and isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: portable(v, to_torch) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(portable(v, to_torch) for v in obj)
    return obj


def gather_ranks(local: dict[str, Any], world_size: int) -> dict[str, Any]:
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        ranks: list[Any] = [None] * world_size
        dist.all_gather_object(ranks, local)
        return {"ranks": ranks}
    return {"ranks": [local]}


def rank_state(state_dict: Mapping[str, Any], rank: int, world_size: int, same: Mapping[str, Any]) -> dict:
    """This rank's saved state, checked against the values resuming needs unchanged (``same``)."""
    ranks = state_dict.get("ranks")
    if not ranks:
        raise DataError("data state: no per-rank states (not saved by MLMDataModule.state_dict)")
    if len(ranks) != max(world_size, 1):
        raise DataError(
            f"data state was saved with {len(ranks)} ranks; resuming needs as many, got {world_size}"
        )
    st = ranks[rank]
    if st.get("version") != STATE_VERSION:
        raise DataError(f"data state version {st.get('version')} is not {STATE_VERSION}")
    for key, value in same.items():
        if st[key] != value:
            raise DataError(
                f"data state: {key} was {st[key]!r} when saved, now {value!r} (resuming needs the same)"
            )
    return st
