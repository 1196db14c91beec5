"""End-to-end merges of tiny models: HF folders, Lightning checkpoints, mixed, the CLI, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedTokenizerFast,
)

from mmbert.errors import MergeError
from mmbert.merge import ops, run_merge
from mmbert.model import MmBertConfig, MmBertForMaskedLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from helpers import REPO

ARCH = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=64,
    global_attn_every_n_layers=2,
    local_attention=16,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
    cls_token_id=1,
    sep_token_id=1,
)
EMBED = "model.embeddings.tok_embeddings.weight"
WEIGHTS = [1.0, 0.5, 0.8]


def _tiny(seed: int, **overrides) -> ModernBertForMaskedLM:
    torch.manual_seed(seed)
    return ModernBertForMaskedLM(ModernBertConfig(**(ARCH | overrides))).eval()


def _finetuned(model: ModernBertForMaskedLM, seed: int) -> ModernBertForMaskedLM:
    """The model after 'training': every parameter moved by seeded noise."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return out


def _save_tokenizer(folder: Path) -> None:
    vocab = {"[PAD]": 0, "[SEP]": 1, "[CLS]": 2, "[UNK]": 3, "[MASK]": 4, "hello": 5, "world": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]"
    )
    tok.save_pretrained(folder)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    """A base checkpoint and three fine-tuned variants as HF folders (the base has a tokenizer)."""
    root = tmp_path_factory.mktemp("family")
    base = _tiny(0)
    paths = {"base": root / "base"}
    base.save_pretrained(paths["base"])
    _save_tokenizer(paths["base"])
    for i in (1, 2, 3):
        paths[f"m{i}"] = root / f"m{i}"
        _finetuned(base, seed=i).save_pretrained(paths[f"m{i}"])
    return paths


def _models(family: dict[str, Path]) -> list[str]:
    return [str(family[f"m{i}"]) for i in (1, 2, 3)]


def _ties(family: dict[str, Path], out: Path, **extra) -> dict:
    return {
        "method": "ties",
        "base": str(family["base"]),
        "models": _models(family),
        "weights": WEIGHTS,
        "density": 0.4,
        "lambda": 0.9,
        "output_dir": str(out),
    } | extra


def test_ties_streamed_matches_whole_tensor_merge_and_loads(family, tmp_path):
    out = run_merge(_ties(family, tmp_path / "out", chunk_elements=500))
    merged = _weights(out)
    base = _weights(family["base"])
    inputs = [_weights(family[f"m{i}"]) for i in (1, 2, 3)]
    assert set(merged) == set(base)  # decoder.weight stays tied, not written
    for name, tensor in base.items():
        expected = ops.ties_merge(tensor, [m[name] for m in inputs], WEIGHTS, density=0.4, lam=0.9)
        torch.testing.assert_close(merged[name], expected, rtol=1e-6, atol=1e-7, msg=name)
    # Chunking changes nothing: a merge with one chunk per tensor writes the same bytes.
    whole = run_merge(_ties(family, tmp_path / "whole"))
    assert (whole / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()

    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()
    state = model.state_dict()
    for name, tensor in merged.items():
        assert torch.equal(state[name], tensor), name
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 5, 6, 1]])).logits
    assert logits.shape == (1, 4, ARCH["vocab_size"]) and torch.isfinite(logits).all()

    tok = AutoTokenizer.from_pretrained(out)
    base_tok = AutoTokenizer.from_pretrained(family["base"])
    assert tok("hello world")["input_ids"] == base_tok("hello world")["input_ids"] == [5, 6]
    assert (out / "config.json").read_bytes() == (family["base"] / "config.json").read_bytes()

    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "ties"
    assert record["parameters"] == {"weights": WEIGHTS, "density": 0.4, "lambda": 0.9, "normalize": True}
    digest = hashlib.sha256((family["base"] / "model.safetensors").read_bytes()).hexdigest()
    assert record["base"]["sha256"]["model.safetensors"] == digest
    assert [m["path"] for m in record["models"]] == [str(Path(p).resolve()) for p in _models(family)]
    assert record["tokenizer"]["source"] == str(family["base"])
    assert _leftovers(tmp_path) == []


def test_ties_without_normalize_and_full_density(family, tmp_path):
    out = run_merge(_ties(family, tmp_path / "out", density=1.0, normalize=False, weights=None))
    base = _weights(family["base"])
    inputs = [_weights(family[f"m{i}"]) for i in (1, 2, 3)]
    for name, tensor in _weights(out).items():
        models = [m[name] for m in inputs]
        expected = ops.ties_merge(base[name], models, [1.0] * 3, 1.0, lam=0.9, normalize=False)
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7, msg=name)


def test_task_arithmetic(family, tmp_path):
    config = _ties(family, tmp_path / "out", method="task_arithmetic", density=None)
    merged = _weights(run_merge(config))
    base = _weights(family["base"])
    inputs = [_weights(family[f"m{i}"]) for i in (1, 2, 3)]
    for name, tensor in merged.items():
        expected = ops.task_arithmetic_merge(base[name], [m[name] for m in inputs], WEIGHTS, lam=0.9)
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7, msg=name)


def test_linear_one_hot_picks_a_model_and_weights_average(family, tmp_path):
    linear = {"method": "linear", "models": _models(family)}
    picked = run_merge(linear | {"weights": [0.0, 1.0, 0.0], "output_dir": tmp_path / "a"})
    m2 = _weights(family["m2"])
    assert all(torch.equal(t, m2[name]) for name, t in _weights(picked).items())
    averaged = run_merge(linear | {"weights": WEIGHTS, "output_dir": tmp_path / "b"})
    inputs = [_weights(family[f"m{i}"]) for i in (1, 2, 3)]
    for name, tensor in _weights(averaged).items():
        torch.testing.assert_close(tensor, ops.linear_merge([m[name] for m in inputs], WEIGHTS), msg=name)
    # No base: config and tokenizer come from the first model, which has no tokenizer.
    record = json.loads((averaged / "merge.json").read_text())
    assert record["base"] is None and record["tokenizer"] is None
    assert record["config_from"] == str(family["m1"].resolve())


def test_ema_decay_zero_picks_newest_and_half_life_weights(family, tmp_path):
    ema = {"method": "ema", "models": _models(family)}
    newest = run_merge(ema | {"decay": 0.0, "output_dir": tmp_path / "a"})
    m3 = _weights(family["m3"])
    assert all(torch.equal(t, m3[name]) for name, t in _weights(newest).items())
    out = run_merge(ema | {"half_life": 1, "output_dir": tmp_path / "b"})
    record = json.loads((out / "merge.json").read_text())
    assert record["parameters"]["weights"] == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    inputs = [_weights(family[f"m{i}"]) for i in (1, 2, 3)]
    for name, tensor in _weights(out).items():
        expected = ops.linear_merge([m[name] for m in inputs], [1 / 7, 2 / 7, 4 / 7])
        torch.testing.assert_close(tensor, expected, msg=name)


def test_sharded_bf16_output_loads_and_reads_back_as_input(family, tmp_path):
    out = run_merge(_ties(family, tmp_path / "out", shard_size="4KB", dtype="bfloat16"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and not (out / "model.safetensors").exists()
    for shard in shards:
        with safe_open(out / shard, framework="pt") as handle:
            assert all(handle.get_slice(n).get_dtype() == "BF16" for n in handle.keys())  # noqa: SIM118
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForMaskedLM.from_pretrained(out)
    fp32 = _weights(run_merge(_ties(family, tmp_path / "fp32")))
    for name, tensor in fp32.items():
        assert torch.equal(model.state_dict()[name].to(torch.bfloat16), tensor.to(torch.bfloat16)), name
    # A sharded folder is a valid input: averaging it with itself returns it.
    again = run_merge(
        {"method": "linear", "models": [str(out)] * 2, "shard_size": "4KB", "output_dir": tmp_path / "again"}
    )
    for shard in [*shards, "model.safetensors.index.json"]:
        assert (again / shard).read_bytes() == (out / shard).read_bytes()


def test_overwrite_replaces_existing_output(family, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(MergeError, match="already exists; set overwrite=true"):
        run_merge(_ties(family, out))
    assert (out / "stale.txt").exists()
    run_merge(_ties(family, out, overwrite=True))
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert _leftovers(tmp_path) == []


def test_cli_merges_without_littering(family, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    models = ",".join(_models(family))
    cmd = [
        sys.executable,
        str(REPO / "merge.py"),
        "method=ties",
        f"base={family['base']}",
        f"models=[{models}]",
        "weights=[1.0,0.5,0.8]",
        "density=0.4",
        "lambda=0.9",
        f"output_dir={tmp_path / 'out'}",
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == []  # no outputs/, .hydra/ or log file
    reference = _weights(run_merge(_ties(family, tmp_path / "api")))
    merged = _weights(tmp_path / "out")
    assert all(torch.equal(merged[name], t) for name, t in reference.items())


# ---------------------------------------------------------------------------------------------------------
# Lightning checkpoints, per the training contract: "net." + HF names, tied decoder, mmbert_config/_tokenizer.

# The HF family's architecture in this project's config (ARCH's token ids are MmBertConfig's defaults).
MM_CONFIG = MmBertConfig(**ARCH)


def _to_ckpt(folder: Path, path: Path, tokenizer: str | None = None, edit=None) -> str:
    """The HF folder's weights in this project's model, saved as a Lightning checkpoint would be."""
    state = _weights(folder)
    state["decoder.weight"] = state[EMBED]
    net = MmBertForMaskedLM(MM_CONFIG)
    net.load_state_dict(state, strict=True)
    assert net.decoder.weight.data_ptr() == net.model.embeddings.tok_embeddings.weight.data_ptr()
    checkpoint = {
        "epoch": 0,
        "global_step": 7,
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(4)}}}],
        "mmbert_config": dataclasses.asdict(MM_CONFIG),
        "mmbert_tokenizer": tokenizer,
    }
    if edit is not None:
        edit(checkpoint)
    torch.save(checkpoint, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(family, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ckpts")
    out = {"base": _to_ckpt(family["base"], root / "base.ckpt", tokenizer=str(family["base"]))}
    for i in (1, 2, 3):
        out[f"m{i}"] = _to_ckpt(family[f"m{i}"], root / f"m{i}.ckpt", tokenizer="jhu-clsp/mmBERT-small")
    return out


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = _weights(a), _weights(b)
    assert left.keys() == right.keys()
    for name, tensor in left.items():
        assert torch.equal(tensor, right[name]), name


def test_lightning_checkpoints_merge_like_hf_folders(family, ckpts, tmp_path):
    from_hf = run_merge(_ties(family, tmp_path / "hf"))
    settings = _ties(
        family, tmp_path / "ckpt", base=ckpts["base"], models=[ckpts[f"m{i}"] for i in (1, 2, 3)]
    )
    from_ckpt = run_merge(settings | {"chunk_elements": 500})
    _assert_same_weights(from_hf, from_ckpt)
    config = json.loads((from_ckpt / "config.json").read_text())
    assert (
        config["model_type"] == "modernbert" and config["vocab_size"] == 96 and config["tie_word_embeddings"]
    )
    model = AutoModelForMaskedLM.from_pretrained(from_ckpt)
    assert model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()
    assert AutoTokenizer.from_pretrained(from_ckpt)("hello world")["input_ids"] == [5, 6]
    record = json.loads((from_ckpt / "merge.json").read_text())
    assert record["base"]["format"] == "lightning" and record["tokenizer"]["source"] == str(family["base"])
    digest = hashlib.sha256(Path(ckpts["m2"]).read_bytes()).hexdigest()
    assert record["models"][1]["sha256"] == {"m2.ckpt": digest}


def test_mixed_inputs(family, ckpts, tmp_path):
    reference = run_merge(_ties(family, tmp_path / "hf"))
    mixed = [ckpts["m1"], str(family["m2"]), ckpts["m3"]]
    _assert_same_weights(reference, run_merge(_ties(family, tmp_path / "a", models=mixed)))
    ckpt_base = run_merge(_ties(family, tmp_path / "b", base=ckpts["base"]))
    _assert_same_weights(reference, ckpt_base)
    assert json.loads((ckpt_base / "merge.json").read_text())["base"]["format"] == "lightning"
    # No tokenizer folder on the checkpoints (a hub name is not copied): the first HF input with one wins.
    linear = {"method": "linear", "models": [ckpts["m1"], str(family["base"])], "output_dir": tmp_path / "c"}
    record = json.loads((run_merge(linear) / "merge.json").read_text())
    assert record["tokenizer"]["source"] == str(family["base"])
    assert record["config_from"] == str(Path(ckpts["m1"]).resolve())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.pop("mmbert_config"), "has no 'mmbert_config' dict"),
        (lambda c: c["mmbert_config"].update(hidden_size=33), "'mmbert_config' in .*bad.ckpt does not fit"),
        (lambda c: c.pop("state_dict"), "has no 'state_dict'"),
        (
            lambda c: c.update(state_dict={"model.x": torch.zeros(2)}),
            "state_dict of .*bad.ckpt has no 'net.' tensors",
        ),
        (
            lambda c: c["state_dict"]["net.head.dense.weight"].__setitem__((0, 0), float("nan")),
            r"tensor 'head.dense.weight' in .*bad\.ckpt contains NaN or inf",
        ),
    ],
)
def test_bad_lightning_checkpoints(family, tmp_path, edit, match):
    bad = _to_ckpt(family["m1"], tmp_path / "bad.ckpt", edit=edit)
    with pytest.raises(MergeError, match=match):
        run_merge(_ties(family, tmp_path / "out", models=[bad, *_models(family)[1:]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


# ---------------------------------------------------------------------------------------------------------
# Bad input: every error names the key, tensor or path, and leaves nothing behind.


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"method": "slerp"}, "unknown method 'slerp'"),
        ({"density": 0.0}, r"density must be in \(0, 1\]"),
        ({"density": 1.5}, r"density must be in \(0, 1\]"),
        ({"weights": [1.0, 1.0]}, "weights has 2 entries but models has 3"),
        ({"densty": 0.4}, "unknown merge key 'densty'"),
        ({"base": None}, "method=ties needs base"),
        ({"decay": 0.5}, "decay=0.5 does not apply to method=ties"),
        ({"method": "linear", "density": None, "lambda": None}, "base=.* does not apply to method=linear"),
        ({"method": "linear", "base": None, "lambda": None}, "density=0.4 does not apply to method=linear"),
        (
            {"method": "ema", "base": None, "density": None, "lambda": None},
            "weights=.* does not apply to method=ema",
        ),
        (
            {"method": "ema", "base": None, "density": None, "lambda": None, "weights": None},
            "needs exactly one of decay",
        ),
        ({"models": []}, "models must be a non-empty list"),
        ({"dtype": "int8"}, "dtype 'int8' is not one of"),
        ({"shard_size": "lots"}, "shard_size 'lots' is not a size"),
        ({"lambda": float("nan")}, "lambda must be a finite number"),
    ],
)
def test_bad_settings_fail_before_any_output(family, tmp_path, changes, match):
    with pytest.raises(MergeError, match=match):
        run_merge(_ties(family, tmp_path / "out") | changes)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_unknown_inputs(family, tmp_path):
    with pytest.raises(MergeError, match=f"input {re.escape(str(tmp_path / 'nope'))} does not exist"):
        run_merge(_ties(family, tmp_path / "out", models=[*_models(family)[:2], str(tmp_path / "nope")]))
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with pytest.raises(MergeError, match=r"notes\.txt is not a checkpoint this project reads"):
        run_merge(_ties(family, tmp_path / "out", base=str(text)))
    with pytest.raises(MergeError, match="would replace input"):
        run_merge(_ties(family, family["m1"], overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _edited_copy(source: Path, dest: Path, edit) -> str:
    shutil.copytree(source, dest)
    tensors = _weights(dest)
    edit(tensors)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return str(dest)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.pop("head.norm.weight"), "tensor 'head.norm.weight' is missing from .*m2x"),
        (lambda t: t.update(extra=torch.zeros(3)), "unexpected tensor 'extra' in .*m2x"),
        (
            lambda t: t.update({"head.dense.weight": torch.zeros(32, 31)}),
            r"tensor 'head.dense.weight' has shape \[32, 32\] in .*base but \[32, 31\] in .*m2x",
        ),
        (
            lambda t: t.update({"decoder.bias": torch.zeros(96, dtype=torch.int64)}),
            "tensor 'decoder.bias' is torch.float32 in .*base but torch.int64 in .*m2x",
        ),
    ],
)
def test_mismatched_tensors_fail_before_any_output(family, tmp_path, edit, match):
    models = _models(family)
    models[1] = _edited_copy(family["m2"], tmp_path / "m2x", edit)
    with pytest.raises(MergeError, match=match):
        run_merge(_ties(family, tmp_path / "out", models=models))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m2x"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"vocab_size": 100}, "different vocab sizes: .*base has vocab_size=96, .*odd has vocab_size=100"),
        ({"num_hidden_layers": 3}, r"different architectures \(num_hidden_layers\)"),
    ],
)
def test_different_architectures(family, tmp_path, overrides, match):
    _tiny(0, **overrides).save_pretrained(tmp_path / "odd")
    with pytest.raises(MergeError, match=match):
        run_merge(_ties(family, tmp_path / "out", models=[*_models(family)[:2], str(tmp_path / "odd")]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_names_tensor_and_file_and_leaves_nothing(family, tmp_path, bad):
    def poison(tensors):
        tensors["model.final_norm.weight"][3] = bad

    models = _models(family)
    models[2] = _edited_copy(family["m3"], tmp_path / "m3x", poison)
    file = re.escape(str(tmp_path / "m3x" / "model.safetensors"))
    with pytest.raises(MergeError, match=f"tensor 'model.final_norm.weight' in {file} contains NaN or inf"):
        run_merge(_ties(family, tmp_path / "out", models=models, chunk_elements=200))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m3x"]  # staging folder removed


def _toy_folder(folder: Path, tensors: dict[str, torch.Tensor]) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "vocab_size": 4}))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return str(folder)


def test_non_float_tensors_are_copied_and_must_agree(tmp_path):
    steps = torch.tensor([3, 1, 4], dtype=torch.int64)
    a = _toy_folder(tmp_path / "a", {"w": torch.ones(2, 2), "steps": steps})
    b = _toy_folder(tmp_path / "b", {"w": torch.zeros(2, 2), "steps": steps})
    out = run_merge({"method": "linear", "models": [a, b], "output_dir": tmp_path / "out"})
    merged = _weights(out)
    assert torch.equal(merged["steps"], steps) and torch.equal(merged["w"], torch.full((2, 2), 0.5))
    c = _toy_folder(tmp_path / "c", {"w": torch.zeros(2, 2), "steps": steps + 1})
    with pytest.raises(MergeError, match=r"non-float tensor 'steps' differs between .*a and .*c"):
        run_merge({"method": "linear", "models": [a, c], "output_dir": tmp_path / "out2"})
    assert not (tmp_path / "out2").exists() and _leftovers(tmp_path) == []
