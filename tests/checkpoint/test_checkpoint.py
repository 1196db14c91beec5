"""mmbert.checkpoint: the authors' Composer/FlexBERT checkpoints through every entry (load_model,
model.init_from, convert, merge), strict errors naming tensors, and loading that never runs pickled code."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FLEXBERT_CONFIG, REPO, save_lightning_checkpoint

from mmbert.checkpoint import Format, load_model, open_reader
from mmbert.checkpoint.flexbert import config_from_flexbert, project_name
from mmbert.checkpoint.hf import load_hf_folder, save_hf_folder
from mmbert.cli.convert import main as convert
from mmbert.errors import CheckpointError, MergeError, UnsafeCheckpointError
from mmbert.merge import run_merge
from mmbert.model import MmBertForMaskedLM
from mmbert.train.init import load_initial_weights
from mmbert.train.resume import AtomicCheckpointIO

TOKENIZER = REPO / "data" / "tokenizer"


def _model(hidden: int = 64, seed: int = 0) -> MmBertForMaskedLM:
    torch.manual_seed(seed)
    cfg = config_from_flexbert(FLEXBERT_CONFIG | {"hidden_size": hidden}, source="test")
    return MmBertForMaskedLM(cfg).eval()


def flexbert_key(name: str, compiled: bool) -> str:
    """The key Composer saves for a project (HF) tensor name: FlexBERT's layout inside HuggingFaceModel."""
    if name.startswith("model.layers."):
        name = "bert.encoder.layers." + name.removeprefix("model.layers.")
    elif name.startswith("model."):
        name = "bert." + name.removeprefix("model.")
    return ("_orig_mod." if compiled else "") + "model." + name


class _FakeComposer:
    """Puts stand-ins of Composer's own classes where pickle finds them while the file is written, and
    removes them again: the test loads without Composer, as users do."""

    def __enter__(self):
        time_mod = types.ModuleType("composer.core.time")

        class TimeUnit(enum.Enum):
            TOKEN = "tok"

        class Time:
            def __init__(self, value, unit):
                self.value, self.unit = value, unit

        for cls in (TimeUnit, Time):
            cls.__module__, cls.__qualname__ = "composer.core.time", cls.__name__
            setattr(time_mod, cls.__name__, cls)
        self.names = ["composer", "composer.core", "composer.core.time"]
        for name in self.names[:2]:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["composer.core.time"] = time_mod
        return time_mod

    def __exit__(self, *exc):
        for name in self.names:
            sys.modules.pop(name, None)


def write_composer(
    path: Path,
    net: MmBertForMaskedLM,
    *,
    compiled=False,
    with_config=True,
    config_edit=None,
    edit=None,
    callbacks=None,
    tokenizer=False,
) -> Path:
    """A Composer checkpoint in the released layout: {"state": State.state_dict(), "rng": [...]}."""
    model_state = {flexbert_key(k, compiled): v.clone() for k, v in net.state_dict().items()}
    if edit is not None:
        edit(model_state)
    with _FakeComposer() as composer:
        state = {
            "model": model_state,
            "optimizers": {
                "DecoupledStableAdamW": {"state": {}, "param_groups": [{"lr": 8e-4, "params": []}]}
            },
            "schedulers": [{"base_lrs": [8e-4], "last_epoch": 7}],
            "algorithms": [],
            "callbacks": {"SpeedMonitor": {"total_eval_wct": 0.0}, **(callbacks or {})},
            "timestamp": {
                "Timestamp": {"token": 123, "batch": 7, "total_wct": datetime.timedelta(seconds=5)}
            },
            "rank_zero_seed": 21,
            "run_name": "mmbert-tiny-ext",
            "dataset_state": {"train": {"sample_in_epoch": 56}},
            "integrations": {},
            "metadata": {"torch_version": torch.__version__, "precision": "amp_bf16"},
            "t_max": composer.Time(100, composer.TimeUnit.TOKEN),
        }
        if with_config:
            content = {"file_extension": ".json", "content": FLEXBERT_CONFIG | {"hidden_size": net.config.hidden_size} | (config_edit or {}),
                       "class": "bert_layers.model.FlexBertForMaskedLM"}  # fmt: skip
            state["integrations"] = {"huggingface": {"model": {"config": content}, "tokenizer": {}}}
        if tokenizer:  # as HuggingFaceModel.get_metadata() keeps a tokenizer: JSON files parsed
            state["integrations"]["huggingface"]["tokenizer"] = {
                f.name: {"file_extension": ".json", "content": json.loads(f.read_text())}
                for f in sorted(TOKENIZER.glob("*.json"))
            }
        rng = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}]
        torch.save({"state": state, "rng": rng}, path)
    return path


def loaded_vocab(folder: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


def _same_weights(a: MmBertForMaskedLM, b: MmBertForMaskedLM) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_flexbert_names_map_onto_the_project_names():
    assert project_name("model.bert.encoder.layers.3.attn.Wqkv.weight") == "model.layers.3.attn.Wqkv.weight"
    assert project_name("_orig_mod.model.bert.embeddings.tok_embeddings.weight") == (
        "model.embeddings.tok_embeddings.weight"
    )
    assert project_name("model.bert.final_norm.weight") == "model.final_norm.weight"
    assert project_name("model.head.dense.weight") == "head.dense.weight"
    assert project_name("module.model.decoder.bias") == "decoder.bias"


@pytest.mark.parametrize("compiled", [False, True])
def test_composer_checkpoint_loads_with_its_config_and_the_same_logits(tmp_path, compiled):
    net = _model()
    path = write_composer(tmp_path / "ext.pt", net, compiled=compiled)
    loaded, tokenizer = load_model(path)
    assert "composer" not in sys.modules, "no Composer code was imported"
    assert tokenizer is None
    cfg = loaded.config
    assert (cfg.global_rope_theta, cfg.local_rope_theta, cfg.local_attention) == (160000.0, 10000.0, 128)
    assert (
        cfg.attention_output_dropout == 0.1 and cfg.norm_eps == 1e-5 and cfg.max_position_embeddings == 8192
    )
    _same_weights(loaded, net)
    ids = torch.randint(5, 8192, (2, 40))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, net(input_ids=ids).logits)
    assert open_reader(path).kind is Format.COMPOSER


def test_composer_checkpoint_as_init_from_convert_and_merge_input(tmp_path, capsys):
    net = _model()
    pt = write_composer(tmp_path / "ext.pt", net, tokenizer=True)
    _, tokenizer = load_model(pt)  # written from the checkpoint's own copy, removed when the reader closes
    assert tokenizer is not None and tokenizer.get_vocab() == loaded_vocab(TOKENIZER)

    fresh = MmBertForMaskedLM(net.config)
    assert load_initial_weights(fresh, str(pt)) is None  # no Lightning state to carry over
    _same_weights(fresh.eval(), net)

    convert(["to-hf", str(pt), str(tmp_path / "hf")])  # the tokenizer the checkpoint holds
    from_hf, tokenizer = load_hf_folder(tmp_path / "hf")
    _same_weights(from_hf, net)
    assert tokenizer is not None and tokenizer.get_vocab() == loaded_vocab(TOKENIZER)

    other = _model(seed=1)
    save_hf_folder(other, tmp_path / "other", tokenizer=TOKENIZER)
    merged = run_merge({"method": "linear", "models": [str(pt), str(tmp_path / "other")],
                        "output_dir": str(tmp_path / "merged")})  # fmt: skip
    result, merged_tokenizer = load_hf_folder(merged)
    assert merged_tokenizer is not None, "the Composer input's tokenizer is copied"
    for name, tensor in result.state_dict().items():
        expected = (net.state_dict()[name] + other.state_dict()[name]) / 2
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-7, msg=name)


def test_composer_checkpoint_without_its_config_needs_one(tmp_path, capsys):
    net = _model()
    pt = write_composer(tmp_path / "ext.pt", net, with_config=False)
    with pytest.raises(
        CheckpointError, match=r"ext\.pt: this Composer checkpoint carries no FlexBERT config"
    ):
        load_model(pt)
    save_hf_folder(net, tmp_path / "released")  # stands for jhu-clsp/mmBERT-base's config.json
    loaded, _ = load_model(pt, config=tmp_path / "released")
    _same_weights(loaded, net)
    with pytest.raises(SystemExit) as exit_info:
        convert(["to-hf", str(pt), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err
    convert(["to-hf", str(pt), str(tmp_path / "hf"), "--config", str(tmp_path / "released")])
    _same_weights(load_hf_folder(tmp_path / "hf")[0], net)
    with pytest.raises(MergeError, match="carries no FlexBERT config"):
        run_merge(
            {"method": "linear", "models": [str(pt), str(tmp_path / "hf")], "output_dir": str(tmp_path / "m")}
        )


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda s: s.pop("model.bert.encoder.layers.2.mlp.Wo.weight"),
            r"missing \['model.layers.2.mlp.Wo.weight'\]",
        ),
        (
            lambda s: s.update({"model.bert.pooler.dense.weight": torch.zeros(2)}),
            r"unexpected \['model.pooler",
        ),
        (
            lambda s: s.update({"model.head.dense.weight": torch.zeros(64, 63)}),
            r"head.dense.weight .* \(64, 63\)",
        ),
    ],
)
def test_bad_composer_tensors_are_named_by_every_entry(tmp_path, edit, match):
    net = _model()
    pt = write_composer(tmp_path / "bad.pt", net, edit=edit)
    with pytest.raises(CheckpointError, match=match):
        load_model(pt)
    with pytest.raises(CheckpointError, match=rf"model\.init_from={pt}.*|{match}"):
        load_initial_weights(MmBertForMaskedLM(net.config), str(pt))


def test_init_from_a_composer_checkpoint_of_another_size_names_the_tensor(tmp_path):
    pt = write_composer(tmp_path / "base.pt", _model(hidden=32))
    with pytest.raises(
        CheckpointError,
        match=r"model\.embeddings\.tok_embeddings\.weight from model\.init_from=.*\(8192, 32\), the model needs \(8192, 64\)",
    ):
        load_initial_weights(_model(hidden=64), str(pt))


def test_a_composer_checkpoint_without_a_sliding_window_loads_all_global(tmp_path):
    net = _model()
    no_window = {"sliding_window": -1, "global_attn_every_n_layers": -1, "local_attn_rotary_emb_base": -1}
    loaded, _ = load_model(write_composer(tmp_path / "ext.pt", net, config_edit=no_window))
    _same_weights(loaded, net)
    assert loaded.config == dataclasses.replace(
        net.config, global_attn_every_n_layers=1, local_rope_theta=net.config.global_rope_theta
    )


def test_a_composer_checkpoint_of_another_rope_is_refused_in_one_line(tmp_path, capsys):
    pt = write_composer(tmp_path / "ext.pt", _model(), config_edit={"rotary_emb_interleaved": True})
    with pytest.raises(SystemExit) as exit_info:
        convert(["to-hf", str(pt), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"mmbert-convert: error: {pt} (FlexBERT config): unsupported FlexBERT option "
        "rotary_emb_interleaved=True; supported: False\n"
    )
    assert not (tmp_path / "hf").exists()


def test_lightning_checkpoints_and_state_dicts_work_under_any_torch_suffix(tmp_path):
    net = _model()
    save_lightning_checkpoint(net, tmp_path / "run.pt")
    loaded, tokenizer = load_model(tmp_path / "run.pt")
    _same_weights(loaded, net)
    assert tokenizer is not None and len(tokenizer) == 8192
    torch.save(net.state_dict(), tmp_path / "weights.bin")
    with pytest.raises(CheckpointError, match="a bare state dict carries no model config"):
        load_model(tmp_path / "weights.bin")
    _same_weights(load_model(tmp_path / "weights.bin", config=net.config)[0], net)
    run_merge({"method": "linear", "models": [str(tmp_path / "run.pt"), str(tmp_path / "run.pt")],
               "output_dir": str(tmp_path / "merged")})  # fmt: skip
    _same_weights(load_hf_folder(tmp_path / "merged")[0], net)


# ---------------------------------------------------------------------------------------------------------
# Safe loading: a crafted pickle that would run code is refused by every entry, naming the file and type.


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(tmp_path: Path, suffix: str, composer: bool) -> tuple[Path, Path]:
    net = _model()
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    if composer:
        return write_composer(path, net, callbacks={"Evil": _WritesMarker(marker)}), marker
    payload = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "mmbert_config": dataclasses.asdict(net.config),
        "hyper_parameters": _WritesMarker(marker),
    }
    torch.save(payload, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize(("suffix", "composer"), [(".ckpt", False), (".pt", True)])
def test_a_pickle_that_runs_code_is_refused_everywhere(tmp_path, capsys, suffix, composer):
    path, marker = _malicious(tmp_path, suffix, composer)
    needle = rf"refusing to load {path}: it pickles posix\.system"
    with pytest.raises(UnsafeCheckpointError, match=needle):
        load_model(path)
    with pytest.raises(UnsafeCheckpointError, match=needle):
        load_initial_weights(_model(), str(path))
    with pytest.raises(MergeError, match=needle):
        run_merge({"method": "linear", "models": [str(path)], "output_dir": str(tmp_path / "out")})
    with pytest.raises(SystemExit):
        convert(["to-hf", str(path), str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert str(path) in err and "posix.system" in err
    with pytest.raises(UnsafeCheckpointError, match=needle):
        AtomicCheckpointIO().load_checkpoint(path)  # ckpt_path= resumes through this
    assert not marker.exists(), "loading ran the pickled code"


def test_composer_types_are_inert_stand_ins_never_run(tmp_path):
    """A global under composer.* is allowed in a Composer file, but only as an inert stand-in: the named
    function does not run even when it exists."""
    marker = tmp_path / "ran"
    module = types.ModuleType("composer.fake")

    def run_me(path):
        Path(path).touch()

    run_me.__module__, run_me.__qualname__ = "composer.fake", "run_me"
    module.run_me = run_me

    class Call:
        def __reduce__(self):
            return (run_me, (str(marker),))

    sys.modules["composer.fake"] = module
    try:
        write_composer(tmp_path / "c.pt", _model(), callbacks={"Fake": Call()})
        with _FakeComposer():
            torch.save({"state_dict": {"net.w": torch.zeros(1)}, "x": Call()}, tmp_path / "run.ckpt")
    finally:
        sys.modules.pop("composer.fake")
    reader = open_reader(tmp_path / "c.pt")
    assert reader.kind is Format.COMPOSER
    assert repr(reader.raw["state"]["callbacks"]["Fake"]) == "<opaque composer.fake.run_me>"
    # A file of another format may not use them.
    with pytest.raises(UnsafeCheckpointError, match=r"run\.ckpt: it pickles composer\.fake\.run_me"):
        open_reader(tmp_path / "run.ckpt")
    assert not marker.exists()
