"""Exports people deploy: `mmbert-convert to-st` in sentence-transformers and `to-hf` in transformers'
pipelines give what `mmbert.encode` and the model give, on real sentences in several languages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    REPO,
    release_shaped_tiny,
    run_command,
    save_lightning_checkpoint,
    side_env,
    side_venv,
)
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast, pipeline

import mmbert
from mmbert.checkpoint.hf import _frame_saved_tokenizer, save_hf_folder
from mmbert.checkpoint.hf_config import hf_config_dict
from mmbert.cli.convert import main
from mmbert.model import MmBertForMaskedLM

TOKENIZER = REPO / "data" / "tokenizer"
# sentence-transformers' files, then those of the Hugging Face folder they sit beside.
ST_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "config.json",
    "model.safetensors",
    "tokenizer.json",
)
ATOL = 1e-5
# Real sentences of several languages and scripts, 4 to 110 tokens framed, no two of a length: every
# batch of more than one is padded.
SENTENCES = [
    "The committee postponed its decision until the budget figures for next year have been checked.",
    "Der Zug nach Hamburg fährt heute wegen Bauarbeiten zwanzig Minuten später ab.",
    "Veðrið var svo gott í gær að við fórum öll í sund eftir vinnu.",
    "Ja.",
    "Москва — столица России и крупнейший по численности населения город страны.",
    "我们明天早上八点在火车站见面，然后一起去博物馆。",
    "يحب الأطفال اللعب في الحديقة بعد المدرسة.",
    "Habari za asubuhi, rafiki yangu!",
    "मुझे चाय के साथ गरम समोसे बहुत पसंद हैं।",
    "Les enfants ont construit un grand château de sable sur la plage, avec des tours, des ponts, un fossé "
    "rempli d'eau de mer et un drapeau fait d'une vieille chemise, puis ils ont regardé la marée monter "
    "lentement jusqu'à ce que les vagues emportent tout.",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[MmBertForMaskedLM, Path]:
    """The tiny model and a Lightning checkpoint of it."""
    net = release_shaped_tiny().eval()
    return net, save_lightning_checkpoint(net, tmp_path_factory.mktemp("run") / "last.ckpt")


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """The run's tokenizer as the project reads it (mmbert.encode frames texts itself)."""
    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def hf_export(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "hf"
    main(["to-hf", str(run[1]), str(out)])
    return out


def _convert(*argv: str, capsys) -> tuple[int, str]:
    """Exit status and stderr of `mmbert-convert argv`."""
    capsys.readouterr()  # what came before (progress bars of loading) is not the command's
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _framed(tokenizer, text: str) -> list[int]:
    return [
        tokenizer.bos_token_id,
        *tokenizer(text, add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]


def test_to_st_embeds_in_sentence_transformers_as_mmbert_encode(run, tokenizer, tmp_path, capsys):
    net, ckpt = run
    main(["to-st", str(ckpt), str(tmp_path / "st")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "st")
    for name in ST_FILES:
        assert (tmp_path / "st" / name).is_file(), name
    lengths = [len(_framed(tokenizer, s)) for s in SENTENCES]
    assert len(set(lengths)) == len(SENTENCES)  # so every batch below is padded

    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert model.max_seq_length == net.config.max_position_embeddings
    assert model[1].get_config_dict()["pooling_mode"] == "mean"
    assert model.similarity_fn_name == "cosine"
    # The exported tokenizer, as sentence-transformers calls it, frames texts as mmbert.encode does.
    features = model.tokenizer(SENTENCES[:2], padding=True)
    assert [ids[:n] for ids, n in zip(features["input_ids"], lengths, strict=False)] == [
        _framed(tokenizer, s) for s in SENTENCES[:2]
    ]

    theirs = torch.from_numpy(model.encode(SENTENCES, batch_size=4))
    ours = mmbert.encode(net, SENTENCES, tokenizer=tokenizer, pooling="mean")
    assert theirs.shape == ours.shape == (len(SENTENCES), net.config.hidden_size)
    diff = (theirs - ours).abs().max().item()
    assert diff < ATOL, diff
    normalized = torch.from_numpy(model.encode(SENTENCES, batch_size=3, normalize_embeddings=True))
    expected = mmbert.encode(net, SENTENCES, tokenizer=tokenizer, pooling="mean", normalize=True)
    assert (normalized - expected).abs().max().item() < ATOL


def test_to_st_cuts_texts_at_max_seq_length_as_mmbert_encode(run, tokenizer, tmp_path, capsys):
    net, ckpt = run
    main(["to-st", str(ckpt), str(tmp_path / "st"), "--max-seq-length", "16", "--tokenizer", str(TOKENIZER)])
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert model.max_seq_length == 16
    assert sum(len(_framed(tokenizer, s)) > 16 for s in SENTENCES) >= 3
    theirs = torch.from_numpy(model.encode(SENTENCES, batch_size=4))
    ours = mmbert.encode(net, SENTENCES, tokenizer=tokenizer, pooling="mean", max_length=16)
    assert (theirs - ours).abs().max().item() < ATOL

    for bad in ("1", str(net.config.max_position_embeddings + 1)):
        code, err = _convert(
            "to-st", str(ckpt), str(tmp_path / f"bad{bad}"), "--max-seq-length", bad, capsys=capsys
        )
        assert code == 2 and "max_seq_length" in err and bad in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / f"bad{bad}").exists()


def _unframed_tokenizer(folder: Path) -> Path:
    """The sample tokenizer without its post-processor: `tokenizer(text)` is the text's body alone."""
    raw = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))
    raw.post_processor = None
    PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>",
    ).save_pretrained(folder)  # fmt: skip
    return folder


def test_exports_frame_texts_with_a_tokenizer_that_does_not(run, tokenizer, tmp_path):
    net, ckpt = run
    bare = _unframed_tokenizer(tmp_path / "bare")
    text, pair = SENTENCES[1], SENTENCES[3]
    assert AutoTokenizer.from_pretrained(bare)(text)["input_ids"] == _framed(tokenizer, text)[1:-1]

    save_hf_folder(net, tmp_path / "as_given", tokenizer=bare)  # a library call keeps it as given
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "as_given")(text)["input_ids"]
        == _framed(tokenizer, text)[1:-1]
    )
    for command in ("to-hf", "to-st"):
        main([command, str(ckpt), str(tmp_path / command), "--tokenizer", str(bare)])
        saved = AutoTokenizer.from_pretrained(tmp_path / command)
        assert saved(text)["input_ids"] == _framed(tokenizer, text), command
        assert saved(text, pair)["input_ids"] == [*_framed(tokenizer, text), *_framed(tokenizer, pair)[1:]]
    theirs = torch.from_numpy(SentenceTransformer(str(tmp_path / "to-st"), device="cpu").encode(SENTENCES))
    ours = mmbert.encode(net, SENTENCES, tokenizer=tokenizer, pooling="mean")
    assert (theirs - ours).abs().max().item() < ATOL


def test_framing_sets_the_flags_transformers_4_rebuilds_a_llama_or_gemma_post_processor_from(tmp_path):
    """transformers 4's Llama/Gemma tokenizer classes build their post-processor from add_bos_token and
    add_eos_token (Gemma's: bos only); transformers 5 does not write these flags, so they are set here."""
    folder = _unframed_tokenizer(tmp_path / "tok")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps(config | {"add_bos_token": True, "add_eos_token": False})
    )
    _frame_saved_tokenizer(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True and config["add_eos_token"] is True
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok("Ja.")["input_ids"] == _framed(tok, "Ja.")


def test_to_hf_in_the_fill_mask_pipeline(run, tokenizer, hf_export):
    net = run[0]
    fill = pipeline("fill-mask", model=str(hf_export), device="cpu")
    assert fill.tokenizer.mask_token == "<mask>" and fill.tokenizer.mask_token_id == net.config.mask_token_id
    texts = [
        f"Der Zug nach Hamburg fährt heute {fill.tokenizer.mask_token} später ab.",
        f"Москва — {fill.tokenizer.mask_token} России.",
    ]
    results = fill(texts, top_k=5)
    assert len(results) == len(texts)
    for text, predictions in zip(texts, results, strict=True):
        assert len(predictions) == 5
        for p in predictions:
            assert set(p) == {"score", "token", "token_str", "sequence"}
            assert 0 < p["score"] <= 1 and fill.tokenizer.mask_token not in p["sequence"]
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
        # The model's own distribution at the mask of the framed text.
        ids = torch.tensor([_framed(tokenizer, text)])
        assert (ids == net.config.mask_token_id).sum() == 1
        with torch.no_grad():
            logits = net(input_ids=ids).logits[ids == net.config.mask_token_id][0]
        top = logits.softmax(-1).topk(5)
        assert [p["token"] for p in predictions] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor(scores), top.values, atol=ATOL, rtol=0)


def test_to_hf_in_the_feature_extraction_pipeline(run, tokenizer, hf_export):
    net = run[0]
    extract = pipeline("feature-extraction", model=str(hf_export), device="cpu")
    outputs = extract(SENTENCES)
    ours = mmbert.encode(net, SENTENCES, tokenizer=tokenizer, pooling="mean")
    diffs = []
    for text, out, mean in zip(SENTENCES, outputs, ours, strict=True):
        hidden = torch.tensor(out[0])
        assert hidden.shape == (len(_framed(tokenizer, text)), net.config.hidden_size)  # the framing agrees
        diffs.append((hidden.mean(0) - mean).abs().max().item())
    assert max(diffs) < ATOL, diffs


def test_exports_write_into_an_existing_folder_alike(run, tmp_path, capsys):
    """Both commands write their files into a folder that has others: their own overwritten, the rest kept."""
    ckpt = run[1]
    for command in ("to-hf", "to-st"):
        out = tmp_path / command
        out.mkdir()
        (out / "notes.txt").write_text("kept\n")
        (out / "config.json").write_text("{}")
        (out / "modules.json").write_text("[]")
        assert _convert(command, str(ckpt), str(out), capsys=capsys) == (0, "")
        assert (out / "notes.txt").read_text() == "kept\n"
        assert json.loads((out / "config.json").read_text())["model_type"] == "modernbert"
    assert len(json.loads((tmp_path / "to-st" / "modules.json").read_text())) == 2
    assert json.loads((tmp_path / "to-hf" / "modules.json").read_text()) == []  # not to-hf's file


def test_a_missing_checkpoint_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "runs" / "last.ckpt"
    for command in ("to-st", "to-hf"):
        code, err = _convert(command, str(missing), str(tmp_path / command), capsys=capsys)
        assert code == 2, command
        assert str(missing) in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / command).exists()


def test_to_st_needs_a_tokenizer(run, tmp_path, capsys):
    """A bare weights file names no tokenizer: to-st says to pass one (to-hf writes a folder without one)."""
    net = run[0]
    state = {k: v for k, v in net.state_dict().items() if k != "decoder.weight"}
    save_file(state, tmp_path / "weights.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(hf_config_dict(net.config)))
    code, err = _convert(
        "to-st", str(tmp_path / "weights.safetensors"), str(tmp_path / "st"),
        "--config", str(tmp_path / "config.json"), capsys=capsys,
    )  # fmt: skip
    assert code == 2 and "--tokenizer" in err and "weights.safetensors" in err, err
    assert len(err.strip().splitlines()) == 1, err


# sentence-transformers 3.x under the oldest transformers pyproject allows: deployments that predate the
# 6.x module names and the transformers 5 this environment runs.
OLD_SENTENCE_TRANSFORMERS = (
    "sentence-transformers==3.4.1",
    "transformers==4.48.3",
    "tokenizers==0.21.4",
    "huggingface_hub==0.36.2",
    "datasets==3.6.0",  # sentence-transformers 3 imports it; this environment's needs a newer huggingface_hub
)
# Loads the sentence-transformers folder argv[1], embeds the texts of argv[2] (a JSON list) into
# argv[3] (.npy) and prints the versions and the modules.
EMBED = """
import json, sys
import numpy as np
import sentence_transformers, transformers
model = sentence_transformers.SentenceTransformer(sys.argv[1], device="cpu")
np.save(sys.argv[3], model.encode(json.loads(sys.argv[2]), batch_size=4))
print(sentence_transformers.__version__, transformers.__version__)
print(model)
"""


@pytest.mark.slow
def test_to_st_embeds_alike_in_sentence_transformers_3_under_transformers_4(run, tokenizer, tmp_path):
    net, ckpt = run
    main(["to-st", str(ckpt), str(tmp_path / "st")])
    python = side_venv(*OLD_SENTENCE_TRANSFORMERS)
    proc = run_command(
        python, "-c", EMBED, tmp_path / "st", json.dumps(SENTENCES), tmp_path / "old.npy",
        cwd=tmp_path, env=side_env(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    versions, modules = proc.stdout.split("\n", 1)
    assert versions == "3.4.1 4.48.3"
    assert "'max_seq_length': 8192" in modules and "'pooling_mode_mean_tokens': True" in modules
    theirs = torch.from_numpy(np.load(tmp_path / "old.npy"))
    ours = mmbert.encode(net, SENTENCES, tokenizer=tokenizer, pooling="mean")
    assert (theirs - ours).abs().max().item() < ATOL
