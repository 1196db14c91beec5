"""Fine-tuning step: the project's packed encoder + mean-pool classification head vs transformers'
ModernBertForSequenceClassification (padded batches, SDPA, classifier_pooling=mean), same weights.

Both get the SAME examples: real sentences of the sample corpus (27 languages), 1 to --max-sentences
consecutive ones of a language per example, so lengths vary as in sentence-pair tasks, and the same labels
(the example's script). One step = forward, cross entropy, backward and an AdamW step. Before timing, the
two models' logits are compared on the batch (they must agree: same weights, same pooling).

    python bench/bench_finetune.py                    # CPU, mmBERT-small dims (sample vocabulary), fp32
    python bench/bench_finetune.py --device cuda --dtype bf16 --size base --batch-examples 256
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import torch
from benchlib import SIZES, bench_parser
from tqdm import tqdm

from mmbert.checkpoint.hf_config import hf_config_dict
from mmbert.data.langcodes import language_script
from mmbert.downstream.heads import EncoderWithHead
from mmbert.downstream.packing import pack
from mmbert.downstream.tasks.encoding import encode_texts
from mmbert.downstream.toy import corpus_sentences
from mmbert.model import MmBertConfig, MmBertForMaskedLM

REPO = Path(__file__).resolve().parents[1]


def make_examples(tokenizer, args: argparse.Namespace) -> tuple[list[torch.Tensor], list[int], list[str]]:
    rng = random.Random(args.seed)
    sentences = corpus_sentences(REPO / "data" / "sample")
    langs = sorted(sentences)
    scripts = sorted({language_script(lang) for lang in langs})
    texts, labels = [], []
    for _ in range(args.batch_examples):
        lang = rng.choice(langs)
        sents = sentences[lang]
        k = rng.randint(1, args.max_sentences)
        start = rng.randrange(len(sents))
        texts.append(" ".join(sents[(start + j) % len(sents)] for j in range(k)))
        labels.append(scripts.index(language_script(lang)))
    return encode_texts(tokenizer, texts, None, args.max_len), labels, scripts


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch-examples", type=int, default=32)
    parser.add_argument("--max-sentences", type=int, default=8, help="most sentences in one example")
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hf-attn", default="sdpa")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification

    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizer")
    seqs, labels, classes = make_examples(tokenizer, args)
    torch.manual_seed(args.seed)
    cfg = MmBertConfig(**(SIZES[args.size] | {"vocab_size": len(tokenizer)}), attn_backend="auto")
    ours = EncoderWithHead(MmBertForMaskedLM(cfg), len(classes), pooled=True).to(device)

    hf_cfg = ModernBertConfig.from_dict(
        hf_config_dict(cfg)
        | {"num_labels": len(classes), "classifier_pooling": "mean", "classifier_dropout": 0.0}
    )
    theirs = ModernBertForSequenceClassification._from_config(hf_cfg, attn_implementation=args.hf_attn)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not map: missing {missing}, unexpected {unexpected}")
    theirs = theirs.to(device)

    packed = pack(seqs, device)
    lengths = torch.tensor([len(s) for s in seqs])
    ids_BL = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=tokenizer.pad_token_id)
    mask_BL = (torch.arange(ids_BL.shape[1])[None, :] < lengths[:, None]).long()
    ids_BL, mask_BL = ids_BL.to(device), mask_BL.to(device)
    target = torch.tensor(labels, device=device)
    with torch.no_grad():
        diff = (
            (ours.eval()(packed) - theirs.eval()(input_ids=ids_BL, attention_mask=mask_BL).logits).abs().max()
        )
    ours.train(), theirs.train()

    def step_ours() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(ours(packed).float(), target)

    def step_theirs() -> torch.Tensor:
        logits = theirs(input_ids=ids_BL, attention_mask=mask_BL).logits
        return torch.nn.functional.cross_entropy(logits.float(), target)

    runs = {
        "mmbert (packed)": (ours, step_ours),
        f"transformers ({args.hf_attn}, padded)": (theirs, step_theirs),
    }
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, (m, _) in runs.items()}
    real = int(lengths.sum())
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for i in tqdm(range(args.warmup + args.steps), desc="steps"):
        # Alternate which model goes first, so that load from other processes hits both alike.
        for name in list(runs) if i % 2 == 0 else list(reversed(runs)):
            _, loss_fn = runs[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
                loss = loss_fn()
            loss.backward()
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                rates[name].append(real / (time.perf_counter() - start))

    padded = ids_BL.numel()
    print(
        f"\n{args.size} dims (vocabulary {len(tokenizer)}), {args.device} {args.dtype}, {len(seqs)} examples of "
        f"{int(lengths.min())}..{int(lengths.max())} tokens: {real} real tokens, {padded} padded "
        f"({real / padded:.0%} real); max |logit difference| before training {float(diff):.2e}"
    )
    print(f"{'real tokens/s (fine-tuning step)':36s} {'best':>10s} {'median':>10s}")
    for name, values in rates.items():
        print(f"{name:36s} {max(values):10.0f} {statistics.median(values):10.0f}")
    a, b = rates.values()
    print(
        f"{'speed-up (mmbert / transformers)':36s} {max(a) / max(b):9.2f}x "
        f"{statistics.median(a) / statistics.median(b):9.2f}x"
    )


if __name__ == "__main__":
    main()
