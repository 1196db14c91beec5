"""Strategy factories whose arguments Hydra cannot express directly (classes as wrap policies).

``trainer=fsdp`` builds Lightning's FSDPStrategy (FSDP1, ``fsdp_version: 1``) by default. Under FSDP1 the
optimizer sees each parameter as a flat view of its rank's part of a layer's flat shard, so StableAdamW's
per-tensor update clipping is computed per shard, not per tensor as the recipe says. ``fsdp_version: 2``
builds :class:`FSDP2Strategy` instead: ``fully_shard`` makes every parameter a DTensor, and StableAdamW
then reduces the clipping statistic over the shards (one all-reduce per step), which keeps the recipe's
rule exactly. FSDP2 needs the LightningModule to call ``trainer.strategy.parallelize(net)`` from its
``configure_model`` hook (Lightning's ModelParallelStrategy, which FSDP2Strategy extends, requires that hook).
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn

from mmbert.model.layers import MmBertEncoderLayer

log = logging.getLogger(__name__)

# FSDP1 names of the options FSDP2 has, for one config that builds either.
_RESHARD_AFTER_FORWARD = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}
_DISTRIBUTED_CHECKPOINT = {"full": False, "sharded": True}


def fsdp_strategy(
    activation_checkpointing: bool = False, fsdp_version: int = 1, **kwargs
) -> FSDPStrategy | FSDP2Strategy:
    """FSDP with one shard unit per encoder layer (optionally recomputing each layer's activations).

    ``fsdp_version=2`` returns :class:`FSDP2Strategy`, translating ``sharding_strategy`` (FULL_SHARD or
    SHARD_GRAD_OP) and ``state_dict_type`` (full or sharded); other keyword arguments go to it unchanged.
    """
    if fsdp_version == 2:
        sharding = kwargs.pop("sharding_strategy", "FULL_SHARD")
        state_dict_type = kwargs.pop("state_dict_type", "full")
        if sharding not in _RESHARD_AFTER_FORWARD:
            raise ValueError(
                f"trainer.strategy.sharding_strategy={sharding!r} has no FSDP2 equivalent here; "
                f"use one of {sorted(_RESHARD_AFTER_FORWARD)}"
            )
        if state_dict_type not in _DISTRIBUTED_CHECKPOINT:
            raise ValueError(
                f"trainer.strategy.state_dict_type must be one of {sorted(_DISTRIBUTED_CHECKPOINT)}, "
                f"got {state_dict_type!r}"
            )
        return FSDP2Strategy(
            reshard_after_forward=_RESHARD_AFTER_FORWARD[sharding],
            activation_checkpointing=activation_checkpointing,
            save_distributed_checkpoint=_DISTRIBUTED_CHECKPOINT[state_dict_type],
            **kwargs,
        )
    if fsdp_version != 1:
        raise ValueError(f"trainer.strategy.fsdp_version must be 1 or 2, got {fsdp_version!r}")
    log.warning(
        "FSDP1 (trainer.strategy.fsdp_version=1): StableAdamW clips each rank's shard of a tensor by that "
        "shard's statistic, not the whole tensor's; fsdp_version=2 keeps the recipe's per-tensor rule"
    )
    layers = {MmBertEncoderLayer}
    if activation_checkpointing:
        kwargs["activation_checkpointing_policy"] = layers
    return FSDPStrategy(auto_wrap_policy=layers, **kwargs)


class FSDP2Strategy(ModelParallelStrategy):
    """Data parallelism with FSDP2 ``fully_shard``: each encoder layer is one shard unit, the rest (token
    embeddings, tied decoder, norms, head) is the root unit. All ranks form one data-parallel mesh dimension.

    Gradients are reduce-scattered after every backward, micro-batches included (as under FSDP1 in
    Lightning): ``block_backward_sync`` is a no-op here, which keeps the gradients sharded between
    micro-batches. ``param_dtype`` / ``reduce_dtype`` set FSDP2's mixed-precision policy (default: the
    parameters' own dtype, with Lightning's precision plugin autocasting the compute).
    """

    def __init__(
        self,
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        param_dtype: str | torch.dtype | None = None,
        reduce_dtype: str | torch.dtype | None = None,
        save_distributed_checkpoint: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )
        self.reshard_after_forward = reshard_after_forward
        self.activation_checkpointing = activation_checkpointing
        self.param_dtype = _dtype(param_dtype)
        self.reduce_dtype = _dtype(reduce_dtype)

    def setup_environment(self) -> None:
        # ModelParallelStrategy's "auto" is one data-parallel replica per node (tensor parallel inside it);
        # here every process is a data-parallel rank.
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def parallelize(self, net: nn.Module) -> nn.Module:
        """Shards ``net`` in place over the data-parallel mesh (call from ``configure_model``)."""
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        if isinstance(net, FSDPModule):  # configure_model runs again for a later fit/validate
            return net
        options: dict = {"mesh": self.device_mesh["data_parallel"]}
        if self.param_dtype is not None or self.reduce_dtype is not None:
            options["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype
            )
        layers = [m for m in net.modules() if isinstance(m, MmBertEncoderLayer)]
        if not layers:
            raise ValueError(f"FSDP2Strategy found no MmBertEncoderLayer in {type(net).__name__}")
        for layer in layers:
            if self.activation_checkpointing:
                from torch.distributed._composable import checkpoint

                checkpoint(layer)
            fully_shard(layer, reshard_after_forward=self.reshard_after_forward, **options)
        # The root keeps its parameters gathered after forward: backward needs them first.
        fully_shard(net, reshard_after_forward=False, **options)
        return net


def _dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a torch dtype: {value!r}")
    return dtype
