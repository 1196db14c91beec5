"""Model merging (TIES, task arithmetic, linear, EMA), streamed tensor by tensor.

`run_merge` is the entry point behind `python merge.py`; `methods` holds one class per method (its settings
and how it merges a tensor), `ops` the pure tensor functions and `io` the checkpoint readers and the
streaming safetensors writer.
"""

from mmbert.merge.config import MergeConfig, MergeSpec, refuse_other_methods_keys
from mmbert.merge.driver import plan_tensors, run_merge
from mmbert.merge.io import open_checkpoint
from mmbert.merge.methods import METHODS, Ema, Linear, MergeMethod, TaskArithmetic, Ties

__all__ = [
    "METHODS",
    "Ema",
    "Linear",
    "MergeConfig",
    "MergeMethod",
    "MergeSpec",
    "TaskArithmetic",
    "Ties",
    "open_checkpoint",
    "plan_tensors",
    "refuse_other_methods_keys",
    "run_merge",
]
