"""Model merging (TIES, task arithmetic, linear, EMA), streamed tensor by tensor.

`run_merge` is the entry point behind `python merge.py`; `ops` holds the pure tensor functions and `io`
the checkpoint readers and the streaming safetensors writer.
"""

from mmbert.merge.config import METHODS, MergeConfig, MergeSpec
from mmbert.merge.driver import plan_tensors, run_merge
from mmbert.merge.io import open_checkpoint

__all__ = [
    "METHODS",
    "MergeConfig",
    "MergeSpec",
    "open_checkpoint",
    "plan_tensors",
    "run_merge",
]
