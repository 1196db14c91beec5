"""Convert any checkpoint this project reads to a Hugging Face ``ModernBertForMaskedLM`` folder, or to a
weights-only Lightning checkpoint.

    python -m mmbert.convert to-hf CHECKPOINT OUT_DIR [--tokenizer PATH_OR_HUB_NAME] [--config CONFIG]
    python -m mmbert.convert from-hf SOURCE OUT.ckpt [--config CONFIG]

CHECKPOINT / SOURCE: an HF folder or hub name, a Lightning ``.ckpt`` (train.py's), a Composer ``.pt`` (the
mmBERT authors' FlexBERT checkpoints), a ``.safetensors`` file or a torch state dict. ``--config`` gives the
architecture of a file that carries none (a config.json, an HF folder or a hub name such as
``jhu-clsp/mmBERT-base``). ``to-hf`` writes a folder that ``transformers.AutoModelForMaskedLM`` loads, with
the tokenizer the checkpoint names unless ``--tokenizer`` gives another; ``from-hf`` writes a checkpoint
that ``model.init_from=`` and ``merge.py`` accept (both also take every input format directly).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from mmbert.checkpoint import (
    LIGHTNING_PREFIX,
    load_model,
    model_from_state,
    open_model_reader,
    resolve_config,
)
from mmbert.cli import user_errors
from mmbert.hf import save_hf_folder


def checkpoint_to_hf(
    ckpt_path: str | Path, out_dir: str | Path, tokenizer: str | None = None, config: str | None = None
) -> Path:
    reader = open_model_reader(ckpt_path)
    try:
        cfg = resolve_config(config) if config is not None else reader.require_config()
        net = model_from_state(cfg, reader.read_all(), source=str(ckpt_path))
        own = reader.tokenizer_dir() or reader.tokenizer_source
        return save_hf_folder(net, out_dir, tokenizer=tokenizer or own)
    finally:
        reader.close()


def hf_to_checkpoint(source: str | Path, out_path: str | Path, config: str | None = None) -> Path:
    net, _ = load_model(source, config=config)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {f"{LIGHTNING_PREFIX}{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "mmbert_config": dataclasses.asdict(net.config)}, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmbert.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="any checkpoint -> Hugging Face folder")
    to_hf.add_argument("checkpoint")
    to_hf.add_argument("out_dir")
    to_hf.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name (default: the run's)")
    to_hf.add_argument(
        "--config", default=None, help="architecture for a file without one (hub name, folder)"
    )
    from_hf = sub.add_parser("from-hf", help="any checkpoint -> weights-only Lightning checkpoint")
    from_hf.add_argument("source")
    from_hf.add_argument("out_path")
    from_hf.add_argument(
        "--config", default=None, help="architecture for a file without one (hub name, folder)"
    )
    args = parser.parse_args(argv)
    with user_errors("python -m mmbert.convert"):
        if args.command == "to-hf":
            print(checkpoint_to_hf(args.checkpoint, args.out_dir, args.tokenizer, args.config))
        else:
            print(hf_to_checkpoint(args.source, args.out_path, args.config))


if __name__ == "__main__":
    main()
