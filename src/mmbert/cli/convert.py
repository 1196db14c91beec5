"""Convert any checkpoint this project reads to a Hugging Face ``ModernBertForMaskedLM`` folder, a
sentence-transformers folder, or a weights-only Lightning checkpoint.

    mmbert-convert to-hf CHECKPOINT OUT_DIR [--tokenizer PATH_OR_HUB_NAME] [--config CONFIG]
    mmbert-convert to-st CHECKPOINT OUT_DIR [--tokenizer PATH_OR_HUB_NAME] [--config CONFIG]
                         [--max-seq-length N]
    mmbert-convert from-hf SOURCE OUT.ckpt [--config CONFIG]
    mmbert-convert shrink SOURCE OUT_DIR --config TARGET_CONFIG [--tokenizer PATH_OR_HUB_NAME]

(``python -m mmbert.cli.convert ...`` is the same command.) CHECKPOINT / SOURCE: an HF folder or hub name, a
Lightning ``.ckpt`` (train.py's), a Composer ``.pt`` (the mmBERT authors' FlexBERT checkpoints), a
``.safetensors`` file or a torch state dict. ``--config`` gives the architecture of a file that carries none
(a config.json, an HF folder or a hub name such as ``jhu-clsp/mmBERT-base``). ``to-hf`` writes a folder that
``transformers.AutoModelForMaskedLM`` loads, with the tokenizer the checkpoint names unless ``--tokenizer``
gives another; ``to-st`` writes that folder with the files that make ``SentenceTransformer(OUT_DIR)`` load it
as a mean-pooling sentence encoder (the embeddings of ``mmbert.encode(..., pooling="mean")``; texts cut to
``--max-seq-length`` tokens, default the model's ``max_position_embeddings``). The tokenizer of every folder
written frames texts as ``<bos> body <eos>``, as the model was trained on them. ``from-hf`` writes a
checkpoint that ``model.init_from=`` and ``merge.py`` accept (both also take every input format directly).
``shrink`` writes the narrower model TARGET_CONFIG (same depth and vocabulary) as a Hugging Face folder, every
tensor a strided sample of SOURCE's, as mmBERT-small was initialised from base (``model.init_mode=strided``
does the same inside train.py).
"""

from __future__ import annotations

import argparse

from mmbert.checkpoint.convert import checkpoint_to_hf, checkpoint_to_st, hf_to_checkpoint, shrink_to_hf
from mmbert.cli.errors import user_errors

PROG = "mmbert-convert"
CONFIG_HELP = "architecture for a file without one (hub name, folder)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="any checkpoint -> Hugging Face folder")
    to_hf.add_argument("checkpoint")
    to_hf.add_argument("out_dir")
    to_hf.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name (default: the run's)")
    to_hf.add_argument("--config", default=None, help=CONFIG_HELP)
    to_st = sub.add_parser("to-st", help="any checkpoint -> sentence-transformers folder (mean pooling)")
    to_st.add_argument("checkpoint")
    to_st.add_argument("out_dir")
    to_st.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name (default: the run's)")
    to_st.add_argument("--config", default=None, help=CONFIG_HELP)
    to_st.add_argument(
        "--max-seq-length",
        type=int,
        default=None,
        help="most tokens of a text, <bos>/<eos> included (default: the model's max_position_embeddings)",
    )
    from_hf = sub.add_parser("from-hf", help="any checkpoint -> weights-only Lightning checkpoint")
    from_hf.add_argument("source")
    from_hf.add_argument("out_path")
    from_hf.add_argument("--config", default=None, help=CONFIG_HELP)
    shrink = sub.add_parser(
        "shrink", help="wider checkpoint -> narrower Hugging Face folder (strided sampling)"
    )
    shrink.add_argument("source")
    shrink.add_argument("out_dir")
    shrink.add_argument(
        "--config", required=True, help="the narrower architecture (config.json, folder, hub name)"
    )
    shrink.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or hub name (default: the source's)"
    )
    args = parser.parse_args(argv)
    with user_errors(PROG):
        if args.command == "to-hf":
            print(checkpoint_to_hf(args.checkpoint, args.out_dir, args.tokenizer, args.config))
        elif args.command == "to-st":
            print(
                checkpoint_to_st(
                    args.checkpoint, args.out_dir, args.tokenizer, args.config, args.max_seq_length
                )
            )
        elif args.command == "shrink":
            print(shrink_to_hf(args.source, args.out_dir, args.config, args.tokenizer))
        else:
            print(hf_to_checkpoint(args.source, args.out_path, args.config))


if __name__ == "__main__":
    main()
