"""A ``data_mix`` config -> its mix: the backend its ``_target_`` names, with ``data_mix.add``'s languages on top
(:class:`~mmbert.data.mix.added.AddedMix`); what training and the offline plan both instantiate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmbert.data.mix.added import AddedMix
from mmbert.data.mix.base import MixSpec
from mmbert.errors import DataError


def one_line(e: BaseException) -> str:
    """Hydra's multi-line messages on one line, without the config search path and links to its docs."""
    text = str(e).split("Config search path:")[0]
    return " ".join(w for line in text.splitlines() if not line.startswith("See http") for w in line.split())


def instantiate_mix(mix_cfg: DictConfig | Mapping[str, Any]) -> MixSpec:
    node = OmegaConf.to_container(mix_cfg, resolve=True) if isinstance(mix_cfg, DictConfig) else dict(mix_cfg)
    assert isinstance(node, dict)
    add = node.pop("add", None)
    try:
        mix = instantiate(node)
    except InstantiationException as e:
        if isinstance(e.__cause__, DataError):
            raise e.__cause__ from None
        raise DataError(f"data_mix: {one_line(e)}") from e
    if not isinstance(mix, MixSpec):
        raise DataError(f"data_mix is not a mix spec: {type(mix).__name__}")
    if add is None:
        return mix
    if not isinstance(add, Mapping):
        raise DataError(f"data_mix.add must be {{language: {{path: DIR, share: S}}}}, got {add!r}")
    return AddedMix(mix, add)
