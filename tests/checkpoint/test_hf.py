"""Hugging Face interop: exact parity with transformers' ModernBertForMaskedLM, conversion, HF folders."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from helpers import SMALL, TINY_DIMS, tiny_config
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForMaskedLM, AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM

from mmbert.checkpoint.hf import from_hf, load_hf_folder, save_hf_folder, to_hf
from mmbert.checkpoint.hf_config import config_from_hf_dict, hf_config_dict
from mmbert.model import MmBertConfig, MmBertForMaskedLM

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4 as in mmBERT's config
# What the released mmBERT checkpoints' config.json holds besides their dimensions and RoPE bases.
MMBERT_FIELDS: dict[str, object] = {
    "model_type": "modernbert",
    "architectures": ["ModernBertForMaskedLM"],
    "pad_token_id": 0,
    "eos_token_id": 1,
    "sep_token_id": 1,
    "cls_token_id": 1,
    "bos_token_id": 2,
    "mask_token_id": 4,
    "global_attn_every_n_layers": 3,
    "local_attention": 128,
    "norm_eps": 1e-5,
    "norm_bias": False,
    "max_position_embeddings": 8192,
    "classifier_pooling": "mean",
    "tie_word_embeddings": True,
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def hf_modernbert(seed: int = 0, **overrides: object) -> ModernBertForMaskedLM:
    """transformers' model with mmBERT's options, configured independently of mmbert.checkpoint.hf_config."""
    fields: dict[str, object] = dict(
        **TINY_DIMS,
        global_rope_theta=160000.0,
        local_rope_theta=160000.0,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=1,
        sep_token_id=1,
        mask_token_id=4,
        classifier_pooling="mean",
        attn_implementation="sdpa",
    )
    fields.update(overrides)
    torch.manual_seed(seed)
    return ModernBertForMaskedLM(ModernBertConfig(**fields)).eval()


def padded_batch(
    lengths: list[int], vocab: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), L), generator=gen)
    mask = (torch.arange(L)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    labels = torch.where((torch.rand(ids.shape, generator=gen) < 0.3) & mask.bool(), ids, -100)
    return ids, mask, labels


def assert_same_mlm_outputs(
    hf_model: ModernBertForMaskedLM, model: MmBertForMaskedLM, lengths: list[int]
) -> None:
    ids, mask, labels = padded_batch(lengths, hf_model.config.vocab_size)
    valid = mask.bool()
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, attention_mask=mask)
        ours = model(input_ids=ids, attention_mask=mask)
        theirs_l = hf_model(input_ids=ids, attention_mask=mask, labels=labels)
        ours_l = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert (ours.logits[valid] - theirs.logits[valid]).abs().max().item() <= 1e-4
    assert (ours_l.loss - theirs_l.loss).abs().item() <= 1e-5
    if hf_model.config.sparse_prediction:
        assert (ours_l.logits - theirs_l.logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    ("global_theta", "local_theta"), [(10000.0, 10000.0), (160000.0, 160000.0), (160000.0, 10000.0)]
)
def test_padded_logits_equal_transformers(global_theta: float, local_theta: float) -> None:
    # Documents far longer than the local window (|i - j| <= 4), mixed lengths, and one past the blocked
    # local-attention threshold (8 windows).
    hf_model = hf_modernbert(
        global_rope_theta=global_theta, local_rope_theta=local_theta, sparse_prediction=True
    )
    model = from_hf(hf_model)
    assert (model.config.global_rope_theta, model.config.local_rope_theta) == (global_theta, local_theta)
    assert_same_mlm_outputs(hf_model, model, [45, 3, 17, 40, 1])
    # and transformers reads the thetas and window that hf_config_dict writes as this model's (compared
    # through outputs: transformers 4 and 5 keep them in different config attributes).
    assert_same_mlm_outputs(to_hf(model).eval(), model, [45, 3, 17, 40, 1])


def test_set_rope_theta_matches_transformers_at_the_new_theta() -> None:
    model = from_hf(hf_modernbert(global_rope_theta=10000.0, local_rope_theta=10000.0))
    model.set_rope_theta(160000.0, 160000.0)
    assert_same_mlm_outputs(to_hf(model).eval(), model, [30, 12])
    reference = hf_modernbert(global_rope_theta=160000.0, local_rope_theta=160000.0)
    reference.load_state_dict(model.state_dict())
    assert_same_mlm_outputs(reference, model, [30, 12])


@pytest.mark.slow
def test_padded_logits_equal_transformers_at_mmbert_small_dims() -> None:
    # One model per theta, built by transformers from its own options (the same seed gives the same weights),
    # rather than editing a built model's RoPE, which transformers 4 and 5 hold in different attributes.
    dims = dict(**SMALL, local_attention=128, initializer_cutoff_factor=2.0)
    model = from_hf(hf_modernbert(**dims, global_rope_theta=10000.0, local_rope_theta=10000.0))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(140.9e6, rel=1e-3)
    for theta in (10000.0, 160000.0):
        model.set_rope_theta(theta, theta)
        hf_model = hf_modernbert(**dims, global_rope_theta=theta, local_rope_theta=theta)
        assert_same_mlm_outputs(hf_model, model, [140, 60])


def test_round_trips_reproduce_every_tensor() -> None:
    hf_model = hf_modernbert()
    back = to_hf(from_hf(hf_model))
    assert back.decoder.weight is back.model.embeddings.tok_embeddings.weight
    for name, tensor in hf_model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    torch.manual_seed(3)
    ours = MmBertForMaskedLM(config_from_hf_dict(hf_model.config.to_dict()))
    again = from_hf(to_hf(ours))
    assert again.decoder.weight is again.model.embeddings.tok_embeddings.weight
    assert again.config == ours.config
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_hf_config_dict_writes_every_mmbert_field() -> None:
    cfg = MmBertConfig(**SMALL, global_rope_theta=160000.0, local_rope_theta=160000.0)
    d = hf_config_dict(cfg)
    expected = MMBERT_FIELDS | {"global_rope_theta": 160000.0, "local_rope_theta": 160000.0}
    assert {k: d[k] for k in expected} == expected
    assert d["layer_types"][:4] == [
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    assert config_from_hf_dict(d) == cfg


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(model_type="bert"), "model_type"),
        (dict(norm_bias=True), "norm_bias"),
        (dict(hidden_activation="silu"), "hidden_activation"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings"),
        (dict(layer_types=["sliding_attention"] * 4), "layer_types"),
        (dict(global_attn_every_n_layers=2), "global_attn_every_n_layers"),
        (dict(layer_types=["full_attention"] + ["sliding_attention"] * 2), "layer_types"),
        (dict(global_rope_theta=5.0), "global_rope_theta"),
        (dict(rope_parameters={"sliding_attention": {"rope_type": "linear", "factor": 2.0}}), "rope_type"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
        (dict(eos_token_id=[1, 2]), "eos_token_id"),
    ],
)
def test_config_from_hf_dict_rejects_unsupported(change: dict, field: str) -> None:
    d = hf_config_dict(tiny_config(local_attention=128, attn_backend="auto"))
    with pytest.raises(ValueError, match=field):
        config_from_hf_dict(d | change)


def build_tokenizer_json(folder: Path, size: int) -> Path:
    vocab = {
        t: i for i, t in enumerate(SPECIAL_TOKENS + [f"w{i}" for i in range(size - len(SPECIAL_TOKENS))])
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def saved_model(tmp_path: Path, tokenizer_size: int = 250) -> tuple[MmBertForMaskedLM, Path]:
    model = from_hf(hf_modernbert())
    folder = save_hf_folder(
        model, tmp_path / "out", tokenizer=build_tokenizer_json(tmp_path / "tok", tokenizer_size)
    )
    return model, folder


def test_save_and_load_round_trip_with_tokenizer(tmp_path: Path) -> None:
    model, folder = saved_model(tmp_path)
    assert "decoder.weight" not in load_file(folder / "model.safetensors")
    loaded, tokenizer = load_hf_folder(folder)
    assert loaded.config == model.config
    assert loaded.decoder.weight is loaded.model.embeddings.tok_embeddings.weight
    assert all(p.requires_grad for p in loaded.parameters())
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert tokenizer is not None and len(tokenizer) == 250
    assert (tokenizer.mask_token, tokenizer.pad_token_id, tokenizer.mask_token_id) == ("<mask>", 0, 4)
    assert tokenizer("w1 w2 <mask>")["input_ids"][-1] == 4


def test_saved_folder_loads_in_transformers_auto_classes(tmp_path: Path) -> None:
    model, folder = saved_model(tmp_path)
    hf_model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert isinstance(hf_model, ModernBertForMaskedLM)
    # the class name that transformers 4 loads too (5.x itself saves "TokenizersBackend")
    tokenizer_class = json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert tokenizer_class == "PreTrainedTokenizerFast"
    assert list(tokenizer(["w1 w2", "w3"], padding=True)) == ["input_ids", "attention_mask"]
    assert hf_model.config.classifier_pooling == "mean"
    assert hf_model.decoder.weight is hf_model.model.embeddings.tok_embeddings.weight
    assert tokenizer.convert_tokens_to_ids("<mask>") == model.config.mask_token_id
    assert_same_mlm_outputs(hf_model, model.eval(), [45, 20, 9])


def test_tokenizer_can_be_a_folder_or_an_object(tmp_path: Path) -> None:
    model, folder = saved_model(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for spec, name in ((folder, "from_folder"), (tokenizer, "from_object")):
        out = save_hf_folder(model, tmp_path / name, tokenizer=spec)
        assert len(AutoTokenizer.from_pretrained(out)) == 250
    assert not (save_hf_folder(model, tmp_path / "no_tok") / "tokenizer.json").exists()
    assert load_hf_folder(tmp_path / "no_tok")[1] is None


def test_tokenizer_longer_than_vocab_is_rejected(tmp_path: Path) -> None:
    model = from_hf(hf_modernbert())
    too_long = build_tokenizer_json(tmp_path / "tok", 301)
    with pytest.raises(ValueError, match="vocab_size=300"):
        save_hf_folder(model, tmp_path / "out", tokenizer=too_long)
    assert not (tmp_path / "out").exists()
    _, folder = saved_model(tmp_path)
    build_tokenizer_json(folder, 301)  # replace the saved tokenizer.json
    with pytest.raises(ValueError, match="vocab_size=300"):
        load_hf_folder(folder)


def _rewrite_weights(folder: Path, edit) -> None:
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("model.layers.2.mlp.Wi.weight"), r"missing \['model.layers.2.mlp.Wi.weight'\]"),
        (lambda s: s.update({"model.extra.weight": torch.zeros(2)}), r"unexpected \['model.extra.weight'\]"),
        (
            lambda s: s.update({"head.dense.weight": torch.zeros(32, 31)}),
            r"head.dense.weight .* shape \(32, 31\)",
        ),
        (lambda s: s.update({"decoder.weight": torch.zeros(300, 32)}), "untied"),
    ],
)
def test_bad_weights_are_rejected_by_name(tmp_path: Path, edit, message: str) -> None:
    _, folder = saved_model(tmp_path)
    _rewrite_weights(folder, edit)
    with pytest.raises(ValueError, match=message):
        load_hf_folder(folder)


def test_wrong_model_type_in_folder_is_rejected(tmp_path: Path) -> None:
    _, folder = saved_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "xlm-roberta"}))
    with pytest.raises(ValueError, match="model_type"):
        load_hf_folder(folder)


def test_sharded_safetensors_and_pytorch_bin_load(tmp_path: Path) -> None:
    model, folder = saved_model(tmp_path)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    loaded, _ = load_hf_folder(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())

    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002\.safetensors"):
        load_hf_folder(folder)

    for path in folder.glob("model*"):
        path.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    loaded, _ = load_hf_folder(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_hf_folder(folder)


def test_hub_name_resolves_through_the_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, folder = saved_model(tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--jhu-clsp--mmBERT-small"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    loaded, tokenizer = load_hf_folder("jhu-clsp/mmBERT-small")
    assert tokenizer is not None
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="jhu-clsp/mmBERT-base"):
        load_hf_folder("jhu-clsp/mmBERT-base")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a hub name"):
        load_hf_folder(tmp_path / "does" / "not" / "exist")
    with pytest.raises(ValueError, match="revision"):
        load_hf_folder(folder, revision="main")


@pytest.mark.parametrize("sparse", [True, False])
def test_export_is_for_inference_and_reads_back_with_the_projects_training_flags(
    tmp_path: Path, sparse: bool
) -> None:
    cfg = config_from_hf_dict(hf_modernbert().config.to_dict())
    torch.manual_seed(0)
    model = MmBertForMaskedLM(
        dataclasses.replace(cfg, sparse_prediction=sparse, attention_output_dropout=0.1)
    ).eval()
    folder = save_hf_folder(model, tmp_path / "out")
    written = json.loads((folder / "config.json").read_text())
    assert written["sparse_prediction"] is False
    assert written["attention_dropout"] == 0.0
    assert not any("output" in key for key in written)
    ids, mask, labels = padded_batch([20, 9], cfg.vocab_size)
    for hf_model in (ModernBertForMaskedLM.from_pretrained(folder).eval(), to_hf(model).eval()):
        with torch.no_grad():
            out = hf_model(input_ids=ids, attention_mask=mask, labels=labels)
        assert out.logits.shape == (2, 20, cfg.vocab_size)
    loaded, _ = load_hf_folder(folder)
    assert loaded.config.sparse_prediction is MmBertConfig.sparse_prediction is True
    assert loaded.config == dataclasses.replace(
        model.config, sparse_prediction=True, attention_output_dropout=0.0
    )
    assert from_hf(to_hf(model)).config == loaded.config


# config.json as transformers 4.x writes it for the released mmBERT checkpoints (mmBERT's fields, tiny dims):
# no layer_types, no rope_parameters, and keys transformers 5 dropped.
LEGACY_CONFIG: dict[str, object] = {
    **MMBERT_FIELDS,
    "transformers_version": "4.48.0",
    "torch_dtype": "float32",
    "vocab_size": 300,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "global_rope_theta": 160000,
    "local_rope_theta": 160000,
    "hidden_activation": "gelu",
    "attention_dropout": 0.0,
    "sparse_prediction": False,
    "reference_compile": None,
    "repad_logits_with_grad": False,
}


def transformers5_layout(legacy: dict[str, object]) -> dict[str, object]:
    moved = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")
    config = {k: v for k, v in legacy.items() if k not in moved}
    config["layer_types"] = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    config["rope_parameters"] = {
        "full_attention": {"rope_type": "default", "rope_theta": legacy["global_rope_theta"]},
        "sliding_attention": {"rope_type": "default", "rope_theta": legacy["local_rope_theta"]},
    }
    return config


def write_folder(folder: Path, config: dict[str, object], model: MmBertForMaskedLM) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "decoder.weight"}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("layout", ["legacy", "transformers5"])
def test_either_config_layout_loads_with_mmberts_attention_pattern(tmp_path: Path, layout: str) -> None:
    expected = tiny_config(
        local_attention=128, attn_backend="auto", global_rope_theta=160000.0, local_rope_theta=160000.0
    )
    torch.manual_seed(0)
    model = MmBertForMaskedLM(expected).eval()
    config = LEGACY_CONFIG if layout == "legacy" else transformers5_layout(LEGACY_CONFIG)
    folder = write_folder(tmp_path / layout, config, model)
    loaded, _ = load_hf_folder(folder)
    cfg = loaded.config
    assert (cfg.global_rope_theta, cfg.local_rope_theta) == (160000.0, 160000.0)
    assert (cfg.local_attention, cfg.half_window, cfg.global_attn_every_n_layers) == (128, 64, 3)
    assert cfg == expected
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    # transformers reads the same file the same way (documents longer than the 64-token half window).
    theirs = ModernBertForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    assert_same_mlm_outputs(theirs, loaded.eval(), [150, 40])


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers"])
def test_missing_required_field_is_named_with_its_file(tmp_path: Path, field: str) -> None:
    config = {k: v for k, v in LEGACY_CONFIG.items() if k != field}
    folder = write_folder(tmp_path / "out", config, MmBertForMaskedLM(config_from_hf_dict(LEGACY_CONFIG)))
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'config.json'))}: .*'{field}'"):
        load_hf_folder(folder)
