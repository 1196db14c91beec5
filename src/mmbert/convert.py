"""Convert between this project's Lightning checkpoints and Hugging Face ``ModernBertForMaskedLM`` folders.

    python -m mmbert.convert to-hf RUN/checkpoints/step-0000100.ckpt OUT_DIR [--tokenizer PATH_OR_HUB_NAME]
    python -m mmbert.convert from-hf jhu-clsp/mmBERT-small OUT.ckpt

``to-hf`` writes a folder that ``transformers.AutoModelForMaskedLM.from_pretrained`` loads (with the run's
tokenizer, recorded in the checkpoint, unless another is given). ``from-hf`` writes a weights-only checkpoint
that ``model.init_from=`` accepts; ``model.init_from`` also takes the HF folder or hub name directly.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from mmbert.hf import load_hf_folder, save_hf_folder
from mmbert.model import MmBertConfig, MmBertForMaskedLM
from mmbert.train.init import (
    LIGHTNING_PREFIX,
    load_lightning_checkpoint,
    load_weights_strict,
    state_dict_from_checkpoint,
)


def checkpoint_to_hf(ckpt_path: str | Path, out_dir: str | Path, tokenizer: str | None = None) -> Path:
    ckpt = load_lightning_checkpoint(ckpt_path)
    if "mmbert_config" not in ckpt:
        raise ValueError(f"{ckpt_path}: no 'mmbert_config' entry; was it written by this project's train.py?")
    net = MmBertForMaskedLM(MmBertConfig.coerce(ckpt["mmbert_config"]))
    load_weights_strict(net, state_dict_from_checkpoint(ckpt, ckpt_path), str(ckpt_path))
    return save_hf_folder(net, out_dir, tokenizer=tokenizer or ckpt.get("mmbert_tokenizer"))


def hf_to_checkpoint(source: str | Path, out_path: str | Path) -> Path:
    net, _ = load_hf_folder(source)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {f"{LIGHTNING_PREFIX}{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "mmbert_config": dataclasses.asdict(net.config)}, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmbert.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="Lightning checkpoint -> Hugging Face folder")
    to_hf.add_argument("checkpoint")
    to_hf.add_argument("out_dir")
    to_hf.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name (default: the run's)")
    from_hf = sub.add_parser("from-hf", help="Hugging Face folder or hub name -> weights-only checkpoint")
    from_hf.add_argument("source")
    from_hf.add_argument("out_path")
    args = parser.parse_args(argv)
    if args.command == "to-hf":
        print(checkpoint_to_hf(args.checkpoint, args.out_dir, args.tokenizer))
    else:
        print(hf_to_checkpoint(args.source, args.out_path))


if __name__ == "__main__":
    main()
