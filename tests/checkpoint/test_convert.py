"""`mmbert-convert`: Lightning checkpoint <-> Hugging Face folder, exact in both directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import REPO, release_shaped_tiny, run_command, save_lightning_checkpoint, side_env, side_venv
from transformers import AutoTokenizer

from mmbert import encode
from mmbert.cli.convert import main
from mmbert.downstream.toy import corpus_sentences
from mmbert.model import MmBertForMaskedLM
from mmbert.train.init import load_initial_weights


def test_to_hf_loads_in_transformers_with_the_same_logits(tmp_path):
    from transformers import AutoModelForMaskedLM

    net = release_shaped_tiny()
    save_lightning_checkpoint(net, tmp_path / "run.ckpt")
    main(["to-hf", str(tmp_path / "run.ckpt"), str(tmp_path / "hf")])
    hf = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    batch = tok(["Þetta er próf.", "Это тест, который длиннее первого."], padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()  # padded positions' logits are undefined in transformers
    with torch.no_grad():
        torch.testing.assert_close(net(**batch).logits[real], hf(**batch).logits[real], atol=1e-4, rtol=1e-4)
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["global_rope_theta"] == 160_000.0 == written["local_rope_theta"]
    assert written["sparse_prediction"] is False


def test_from_hf_round_trips_every_tensor(tmp_path):
    net = release_shaped_tiny()
    save_lightning_checkpoint(net, tmp_path / "run.ckpt")
    main(["to-hf", str(tmp_path / "run.ckpt"), str(tmp_path / "hf")])
    main(["from-hf", str(tmp_path / "hf"), str(tmp_path / "back.ckpt")])
    again = MmBertForMaskedLM(net.config)
    load_initial_weights(again, str(tmp_path / "back.ckpt"))
    for name, tensor in net.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_to_hf_rejects_a_foreign_checkpoint(tmp_path, capsys):
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["to-hf", str(tmp_path / "other.ckpt"), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "other.ckpt" in err and "mmbert_config" in err and len(err.strip().splitlines()) == 1


SENTENCE_TRANSFORMERS = "sentence-transformers==6.3.0"
# Loads the HF folder argv[1] as sentence-transformers does a plain transformers model (mean pooling), embeds
# the texts of argv[2] (a JSON list) into argv[3] (.npy) and prints its version and modules.
EMBED = """
import json, sys
import numpy as np
import sentence_transformers
model = sentence_transformers.SentenceTransformer(sys.argv[1], device="cpu")
np.save(sys.argv[3], model.encode(json.loads(sys.argv[2]), batch_size=3))
print(sentence_transformers.__version__)
print(model)
"""


@pytest.mark.slow
def test_to_hf_export_embeds_in_sentence_transformers_as_the_projects_mean_pooling(tmp_path):
    net = release_shaped_tiny().eval()
    save_lightning_checkpoint(net, tmp_path / "run.ckpt")
    main(["to-hf", str(tmp_path / "run.ckpt"), str(tmp_path / "hf")])
    sentences = corpus_sentences(REPO / "data" / "sample")
    texts = [sentences[lang][i] for lang in ("eng_Latn", "fao_Latn", "cmn_Hani", "tir_Ethi") for i in (0, 1)]

    python = side_venv(SENTENCE_TRANSFORMERS)
    proc = run_command(
        python, "-c", EMBED, tmp_path / "hf", json.dumps(texts), tmp_path / "st.npy",
        cwd=tmp_path, env=side_env(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    version, modules = proc.stdout.split("\n", 1)
    assert version == SENTENCE_TRANSFORMERS.split("==")[1]
    assert "Pooling({'embedding_dimension': 64, 'pooling_mode': 'mean'," in modules
    theirs = torch.from_numpy(np.load(tmp_path / "st.npy"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = encode(net, texts, tokenizer=tokenizer, batch_tokens=64)
    assert theirs.shape == ours.shape == (len(texts), net.config.hidden_size)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
