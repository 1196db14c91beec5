"""Loading starting weights for a phase: an HF folder, a hub name, or a Lightning checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LIGHTNING_PREFIX = "net."


def is_lightning_checkpoint(source: str | Path) -> bool:
    path = Path(source)
    return path.is_file() and path.suffix in {".ckpt", ".pt", ".pth"}


def load_lightning_checkpoint(path: str | Path) -> dict:
    # mmap keeps a large checkpoint out of RAM until a tensor is touched.
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)


def state_dict_from_checkpoint(ckpt: dict, path: str | Path) -> dict[str, torch.Tensor]:
    if "state_dict" not in ckpt:
        raise ValueError(f"model.init_from={path}: not a Lightning checkpoint (no 'state_dict' key)")
    state = {
        k[len(LIGHTNING_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(LIGHTNING_PREFIX)
    }
    if not state:
        raise ValueError(f"model.init_from={path}: no tensors under the '{LIGHTNING_PREFIX}' prefix")
    return state


def load_weights_strict(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``net``; any missing, unexpected or mis-shaped tensor is an error naming it."""
    own = net.state_dict()
    tied = {"decoder.weight"}  # tied to the token embedding: files often omit it
    missing = sorted(k for k in own if k not in state and k not in tied)
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise ValueError(
            f"model.init_from={source}: tensors do not match the model config; "
            f"missing={missing[:8]}{'...' if len(missing) > 8 else ''} "
            f"unexpected={unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(
                f"model.init_from={source}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the model config expects {tuple(own[name].shape)}"
            )
    net.load_state_dict({k: v for k, v in state.items()}, strict=False)


def load_initial_weights(net: nn.Module, source: str) -> dict | None:
    """Load weights from ``source`` into ``net``; returns the Lightning checkpoint dict when it was one.

    The current phase's config wins over the source's for everything that is not a tensor (RoPE thetas,
    dropout, attention backend), which is what makes context extension a config change.
    """
    if is_lightning_checkpoint(source):
        ckpt = load_lightning_checkpoint(source)
        load_weights_strict(net, state_dict_from_checkpoint(ckpt, source), source)
        return ckpt
    from mmbert.hf import load_hf_folder

    model, _ = load_hf_folder(source)
    load_weights_strict(net, model.state_dict(), source)
    return None


def init_tokenizer_source(source: str) -> str | None:
    """Where the tokenizer the ``model.init_from`` weights were trained with lives (a folder or hub name),
    or None when the source does not say."""
    if is_lightning_checkpoint(source):
        return load_lightning_checkpoint(source).get("mmbert_tokenizer")
    path = Path(source).expanduser()
    if path.is_dir():
        from mmbert.hf import TOKENIZER_FILES

        return str(path) if any((path / name).is_file() for name in TOKENIZER_FILES) else None
    return source  # a hub name: its repository holds the tokenizer
