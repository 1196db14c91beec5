"""Strategy factories whose arguments Hydra cannot express directly (classes as wrap policies)."""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy

from mmbert.model.layers import MmBertEncoderLayer


def fsdp_strategy(activation_checkpointing: bool = False, **kwargs) -> FSDPStrategy:
    """FSDP with one shard unit per encoder layer (optionally recomputing each layer's activations)."""
    layers = {MmBertEncoderLayer}
    if activation_checkpointing:
        kwargs["activation_checkpointing_policy"] = layers
    return FSDPStrategy(auto_wrap_policy=layers, **kwargs)
