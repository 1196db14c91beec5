"""Merging what train.py writes: three short decay runs from one start, TIES against the start, then the merge
loads in transformers and trains further with train.py."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from mmbert.merge import run_merge
from mmbert.train.run import run


def test_ties_merge_of_three_trained_runs_loads_and_trains(compose_fast, tmp_path):
    start = tmp_path / "start"
    run(compose_fast("phase=midtrain", "trainer.max_steps=2", output_dir=start))
    variants = []
    for subset in ("decay-eng", "decay-cont", "decay-all"):
        out = tmp_path / subset
        run(
            compose_fast(
                "phase=decay",
                f"data_mix.subset={subset}",
                "trainer.max_steps=3",
                f"model.init_from={start / 'checkpoints' / 'last.ckpt'}",
                output_dir=out,
            )
        )
        variants.append(out)

    merged = tmp_path / "ties"
    run_merge(
        {
            "method": "ties",
            "base": str(start / "hf"),
            # Lightning checkpoints and HF folders mix freely.
            "models": [
                str(variants[0] / "checkpoints" / "last.ckpt"),
                *(str(v / "hf") for v in variants[1:]),
            ],
            "density": 0.5,
            "output_dir": str(merged),
        }
    )
    record = json.loads((merged / "merge.json").read_text())
    assert record["method"] == "ties" and len(record["models"]) == 3
    assert record["models"][0]["format"] != record["models"][1]["format"]

    weights = load_file(merged / "model.safetensors")
    name = "model.layers.1.mlp.Wi.weight"
    base = load_file(start / "hf" / "model.safetensors")[name]
    inputs = [load_file(v / "hf" / "model.safetensors")[name] for v in variants]
    assert not torch.equal(weights[name], base)
    assert all(not torch.equal(weights[name], t) for t in inputs)
    # TIES keeps each entry within the range spanned by base and the variants' (trimmed) deltas.
    lo = torch.minimum(base, torch.stack(inputs).min(0).values)
    hi = torch.maximum(base, torch.stack(inputs).max(0).values)
    assert bool(((weights[name] >= lo - 1e-6) & (weights[name] <= hi + 1e-6)).all())

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    hf = AutoModelForMaskedLM.from_pretrained(merged).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    with torch.no_grad():
        logits = hf(**tok(["Hej, hur mår du?"], return_tensors="pt")).logits
    assert torch.isfinite(logits).all()

    again = tmp_path / "from_merge"
    trainer = run(
        compose_fast("phase=decay", "trainer.max_steps=2", f"model.init_from={merged}", output_dir=again)
    )
    assert trainer.global_step == 2 and (again / "hf" / "model.safetensors").is_file()
