"""Hugging Face interop: transformers' ModernBertForMaskedLM <-> MmBertForMaskedLM, and HF model folders.

Parameter names are identical on both sides; the token embedding and the decoder weight are one tied tensor
(`decoder.weight` is never written to files and may be absent from them). The config.json mapping is
:mod:`mmbert.checkpoint.hf_config`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import save_file

from mmbert.checkpoint.formats import (
    CONFIG_FILE,
    SAFETENSORS_FILE,
    TIED_KEY,
    find_tokenizer_files,
    make_tokenizer_config_portable,
)
from mmbert.checkpoint.hf_config import config_from_hf_dict, hf_config_dict
from mmbert.checkpoint.hub import resolve_folder, resolve_tokenizer_source
from mmbert.checkpoint.loading import model_from_state
from mmbert.checkpoint.readers import HfFolderReader
from mmbert.errors import DataError
from mmbert.model import MmBertConfig, MmBertForMaskedLM

if TYPE_CHECKING:
    from transformers import ModernBertForMaskedLM, PreTrainedTokenizerBase


def from_hf(hf_model: ModernBertForMaskedLM) -> MmBertForMaskedLM:
    """Copy of a transformers ModernBertForMaskedLM (same weights, dtype and device; decoder tied)."""
    cfg = config_from_hf_dict(hf_model.config.to_dict(), source=f"{type(hf_model).__name__}.config")
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    model = model_from_state(cfg, state, source=f"{type(hf_model).__name__}")
    return model.train(hf_model.training)


def to_hf(model: MmBertForMaskedLM) -> ModernBertForMaskedLM:
    """transformers ModernBertForMaskedLM with the same weights (copied), dtype, device and tied decoder."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    hf_cfg = ModernBertConfig.from_dict(hf_config_dict(model.config))
    param = model.model.embeddings.tok_embeddings.weight
    hf_model = ModernBertForMaskedLM(hf_cfg).to(device=param.device, dtype=param.dtype)
    hf_model.load_state_dict(model.state_dict(), strict=True)
    if hf_model.decoder.weight is not hf_model.model.embeddings.tok_embeddings.weight:
        raise RuntimeError("transformers did not tie decoder.weight to the token embedding")
    return hf_model.train(model.training)


def save_hf_folder(
    model: MmBertForMaskedLM,
    path: str | Path,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    *,
    frame_texts: bool = False,
) -> Path:
    """Write config.json, model.safetensors (without the tied decoder.weight) and, if given, the tokenizer
    (a tokenizer folder, a tokenizer.json file or a transformers tokenizer) into `path`; returns the folder.
    The folder loads in transformers 4.48.3 to 5.x alike.

    ``frame_texts``: the saved tokenizer frames every text as ``<bos> body <eos>`` (a pair as ``<bos> a <eos>
    b <eos>``) when called as ``tokenizer(texts)``, as the training data and :func:`mmbert.encode` frame them,
    so that transformers' pipelines and sentence-transformers feed the model what it was trained on; a
    tokenizer that already does so is saved unchanged. The exports of :mod:`mmbert.cli.convert` and of a
    finished run use it; without it the tokenizer is saved as given."""
    folder = Path(path)
    tok = _resolve_tokenizer(tokenizer, model.config)
    if tok is not None:
        _check_tokenizer_size(tok, model.config)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = model.model.embeddings.tok_embeddings.weight.dtype
    config = hf_config_dict(model.config) | {"dtype": str(dtype).removeprefix("torch.")}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != TIED_KEY}
    save_file(state, folder / SAFETENSORS_FILE, metadata={"format": "pt"})
    if tok is not None:
        tok.save_pretrained(folder)
        make_tokenizer_config_portable(folder)
        if frame_texts:
            _frame_saved_tokenizer(folder)
    return folder


def load_hf_folder(
    path_or_hub_name: str | Path, *, revision: str | None = None
) -> tuple[MmBertForMaskedLM, PreTrainedTokenizerBase | None]:
    """Model (fp32, CPU) and tokenizer (None if the folder has none) from a local HF folder or a hub name such
    as jhu-clsp/mmBERT-small (downloaded through the HF cache; honours HF_HUB_OFFLINE). Strict: missing,
    unexpected or misshapen tensors raise, naming them."""
    folder = resolve_folder(path_or_hub_name, revision)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {folder}")
    cfg = config_from_hf_dict(json.loads(config_path.read_text()), source=str(config_path))
    tokenizer = None
    if find_tokenizer_files(folder):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        _check_tokenizer_size(tokenizer, cfg)
    reader = HfFolderReader(folder)
    try:
        state = reader.read_all()
    finally:
        reader.close()
    return model_from_state(cfg, state, source=str(folder)), tokenizer


def _resolve_tokenizer(
    tokenizer: str | Path | PreTrainedTokenizerBase | None, cfg: MmBertConfig
) -> PreTrainedTokenizerBase | None:
    if tokenizer is None:
        return None
    from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    if not isinstance(tokenizer, str | Path):
        raise TypeError(
            f"tokenizer must be None, a path or a PreTrainedTokenizerBase, got {type(tokenizer).__name__}"
        )
    path = resolve_tokenizer_source(tokenizer)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    if path.is_file() and path.suffix == ".json":
        from tokenizers import Tokenizer

        raw = Tokenizer.from_file(str(path))
        special: dict[str, str] = {}
        for role, token_id in (
            ("pad_token", cfg.pad_token_id),
            ("eos_token", cfg.eos_token_id),
            ("bos_token", cfg.bos_token_id),
            ("cls_token", cfg.cls_token_id),
            ("sep_token", cfg.sep_token_id),
            ("mask_token", cfg.mask_token_id),
        ):
            token = raw.id_to_token(token_id)
            if token is None:
                raise ValueError(
                    f"{role.removesuffix('_token')}_token_id={token_id} is not in tokenizer {path}"
                )
            special[role] = token
        return PreTrainedTokenizerFast(tokenizer_object=raw, **special)
    raise FileNotFoundError(
        f"tokenizer {path} is neither a tokenizer folder, a tokenizer .json file nor a hub name like 'org/model'"
    )


# Any text with a few ordinary tokens: how the saved tokenizer frames it tells how it frames every text.
_PROBE = "mmBERT frames every text."


def _frames_texts(tokenizer: PreTrainedTokenizerBase) -> bool:
    body = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    return tokenizer(_PROBE)["input_ids"] == [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]


def _frame_saved_tokenizer(folder: Path) -> None:
    """Make the tokenizer saved in ``folder`` add ``<bos>``/``<eos>`` around texts (:func:`save_hf_folder`).

    The framing is tokenizer.json's post-processor, which every tokenizer class reads in transformers 5; in
    transformers 4 the Llama/Gemma classes rebuild it from their ``add_bos_token``/``add_eos_token`` flags,
    so where tokenizer_config.json has those, they are set too. The folder is read back as transformers
    reads it, and an unframed result is an error rather than an export that embeds other inputs."""
    from tokenizers import Tokenizer, processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if _frames_texts(tok):
        return
    if tok.bos_token is None or tok.eos_token is None:
        raise DataError(f"the tokenizer saved in {folder} has no bos or eos token to frame texts with")
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise DataError(
            f"cannot make the tokenizer saved in {folder} add {tok.bos_token}/{tok.eos_token}: it has no "
            "tokenizer.json (not a fast tokenizer)"
        )
    bos, eos = tok.bos_token, tok.eos_token
    raw = Tokenizer.from_file(str(path))
    raw.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tok.bos_token_id), (eos, tok.eos_token_id)],
    )
    raw.save(str(path))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if "add_bos_token" in config or "add_eos_token" in config:
        config |= {"add_bos_token": True, "add_eos_token": True}
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if not _frames_texts(AutoTokenizer.from_pretrained(folder)):
        raise DataError(
            f"the tokenizer saved in {folder} ignores its post-processor: it does not frame texts as "
            f"{bos} ... {eos}"
        )


def _check_tokenizer_size(tokenizer: PreTrainedTokenizerBase, cfg: MmBertConfig) -> None:
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size={cfg.vocab_size}")
