"""Strided sampling of a wider model's weights into a narrower one of the same depth and vocabulary: how
mmBERT-small was "initialized from base" (RECIPE.md §6).

Every tensor keeps every ``k``-th unit of each dimension that shrinks by ``k``: hidden units ``[::k]`` on the
residual side of every tensor (embedding, norms, each projection, the head, the decoder), whole attention
heads ``[::k]`` on the attention side (so each kept head keeps its RoPE layout: the head size must not
change), intermediate units ``[::k]`` on the MLP side. Fused tensors are selected block by block: Wqkv per
q/k/v block, the GeGLU's Wi per half (input, gate), so that a kept unit keeps its partners. Dimensions of
equal size are kept whole. The paper says no more than "strided sampling"; the head and intermediate choice
here is the natural reading of it, not a published one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mmbert.checkpoint.loading import check_state
from mmbert.errors import CheckpointError, ConfigError
from mmbert.model import MmBertConfig, MmBertForMaskedLM


@dataclass(frozen=True)
class _Axis:
    """How one dimension of a tensor is sampled: ``blocks`` fused blocks side by side, each made of units of
    ``unit`` consecutive entries (a head's rows, or one hidden / intermediate unit)."""

    blocks: int = 1
    unit: int = 1


def _axes(key: str, ndim: int, head_dim: int) -> tuple[_Axis, ...]:
    """The sampling of each dimension of the tensor named ``key`` (an MmBertForMaskedLM state-dict name).
    Plain units everywhere else: hidden units, intermediate units (mlp.Wo), the vocabulary (kept whole, as
    it never differs)."""
    if key.endswith("attn.Wqkv.weight"):
        return _Axis(blocks=3, unit=head_dim), _Axis()
    if key.endswith("attn.Wo.weight"):
        return _Axis(), _Axis(unit=head_dim)
    if key.endswith("mlp.Wi.weight"):
        return _Axis(blocks=2), _Axis()
    return (_Axis(),) * ndim


def _strided_index(src: int, dst: int, axis: _Axis, key: str, dim: int) -> Tensor:
    """Indices (into a dimension of size ``src``) of the ``dst`` entries that strided sampling keeps."""
    per_unit = axis.blocks * axis.unit
    src_units, dst_units = src // per_unit, dst // per_unit
    if src_units % dst_units:
        what = "heads" if axis.unit > 1 else "units"
        raise CheckpointError(
            f"{key}: dim {dim} has {src} in the source and {dst} in the target; strided sampling needs the "
            f"source's {what} to be a multiple of the target's"
        )
    units = torch.arange(0, src_units, src_units // dst_units) * axis.unit
    within_block = (units[:, None] + torch.arange(axis.unit)).flatten()
    block_starts = torch.arange(axis.blocks) * (src // axis.blocks)
    return (block_starts[:, None] + within_block).flatten()


def check_shrinkable(source: MmBertConfig, target: MmBertConfig) -> None:
    """What strided sampling keeps: depth, vocabulary and head size; an error names the setting."""
    for name in ("num_hidden_layers", "vocab_size"):
        src, dst = getattr(source, name), getattr(target, name)
        if src != dst:
            raise ConfigError(f"{name}: {src} in the source, {dst} in the target; strided init keeps it")
    if source.head_dim != target.head_dim:
        raise ConfigError(
            f"num_attention_heads: head size hidden_size/num_attention_heads is {source.head_dim} in the source "
            f"({source.hidden_size}/{source.num_attention_heads}), {target.head_dim} in the target "
            f"({target.hidden_size}/{target.num_attention_heads}); strided init keeps whole heads"
        )


def shrink_state(
    state: Mapping[str, Tensor], source: MmBertConfig, target: MmBertConfig, *, origin: str
) -> dict[str, Tensor]:
    """The target model's state dict sampled from ``state`` (a state dict of a ``source`` model; the tied
    decoder may be absent, and is then absent from the result). Errors name the tensor or setting and both
    sizes; ``origin`` names where ``state`` came from."""
    check_shrinkable(source, target)
    with torch.device("meta"):
        source_shapes = {k: tuple(v.shape) for k, v in MmBertForMaskedLM(source).state_dict().items()}
        target_shapes = {k: tuple(v.shape) for k, v in MmBertForMaskedLM(target).state_dict().items()}
    check_state(source_shapes, state, origin)
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        dst_shape = target_shapes[key]
        for dim, axis in enumerate(_axes(key, tensor.ndim, target.head_dim)):
            if tensor.shape[dim] != dst_shape[dim]:  # equal dimensions are kept whole, without a copy
                tensor = tensor.index_select(
                    dim, _strided_index(tensor.shape[dim], dst_shape[dim], axis, key, dim)
                )
        out[key] = tensor
    return out
