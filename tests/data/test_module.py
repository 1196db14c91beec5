"""MLMDataModule: the batch contract, runtime knobs, validation batches and exact resumption."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmbert.data import MLMDataModule, SampleMix
from mmbert.errors import DataError

SEQ = 128


def make_dm(num_workers: int = 0, subset: str = "decay-all", **kw: Any) -> MLMDataModule:
    args: dict[str, Any] = {"seq_len": SEQ, "rows_per_device": 4, "tau": 0.5, "mask_ratio": 0.3, "seed": 3}
    args.update(kw)
    return MLMDataModule(SampleMix(subset=subset), num_workers=num_workers, snapshot_every=8, **args)


def check_batch(b: dict[str, Any], dm: MLMDataModule, rows: int) -> None:
    tok = dm.tokenizer
    T = rows * dm.seq_len
    assert set(b) == {
        "input_ids",
        "labels",
        "cu_seqlens",
        "max_seqlen",
        "num_tokens",
        "num_rows",
        "lang_tokens",
    }
    assert b["num_rows"] == rows
    assert b["input_ids"].dtype == torch.long and b["input_ids"].shape == (T,)
    assert b["labels"].dtype == torch.long and b["labels"].shape == (T,)
    cu = b["cu_seqlens"]
    assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == T and bool((cu[1:] > cu[:-1]).all())
    assert b["max_seqlen"] == int((cu[1:] - cu[:-1]).max()) <= dm.seq_len
    n = b["num_tokens"]
    assert b["lang_tokens"].shape == (len(dm.languages),) and int(b["lang_tokens"].sum()) == n
    assert bool((b["labels"][n:] == -100).all()) and bool((b["input_ids"][n:] == tok.pad_token_id).all())
    original = torch.where(b["labels"] != -100, b["labels"], b["input_ids"])
    starts, ends = cu[:-1].long(), cu[1:].long() - 1
    docs = starts < n
    assert bool((original[starts[docs]] == tok.bos_token_id).all())
    assert bool((original[ends[docs]] == tok.eos_token_id).all())
    assert int(cu[docs.sum()]) == n  # the padding is a separate segment


def take(dm: MLMDataModule, n: int) -> list[dict[str, Any]]:
    it = dm.train_batches()
    return [next(it) for _ in range(n)]


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_batch_contract_and_runtime_knobs() -> None:
    dm = make_dm()
    it = dm.train_batches()
    for _ in range(3):
        check_batch(next(it), dm, 4)
    dm.set_step_rows(1)
    check_batch(next(it), dm, 1)
    dm.set_step_rows(3)
    check_batch(next(it), dm, 3)
    dm.set_step_rows(6)  # more than a micro-batch holds: a step of 4 + 2 rows
    check_batch(next(it), dm, 4)
    check_batch(next(it), dm, 2)
    for bad in (0, 2.0):
        with pytest.raises(DataError, match="rows per optimizer step"):
            dm.set_step_rows(bad)  # type: ignore[arg-type]
    dm.set_step_rows(4)

    def masked_fraction(k: int) -> float:
        bs = [next(it) for _ in range(k)]
        return sum(int((b["labels"] != -100).sum()) for b in bs) / sum(b["num_tokens"] for b in bs)

    assert dm.mask_ratio == 0.3 and masked_fraction(20) == pytest.approx(0.3 * 0.9, abs=0.04)
    dm.set_mask_ratio(0.05)
    assert dm.mask_ratio == 0.05 and masked_fraction(20) == pytest.approx(0.05 * 0.9, abs=0.02)
    with pytest.raises(DataError, match="mask_ratio"):
        dm.set_mask_ratio(1.0)


def test_validation_batches_are_fixed_per_language() -> None:
    dm = make_dm(subset="pretrain", val_rows_per_device=2)
    langs = dm.val_languages
    loaders = dm.val_dataloader()
    assert langs == dm.languages and len(loaders) == len(langs)
    first = [list(loader) for loader in loaders]
    second = [list(loader) for loader in dm.val_dataloader()]
    masked = total = 0
    for lang, a, b in zip(langs, first, second, strict=True):
        assert a and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        for batch in a:
            check_batch(batch, dm, batch["input_ids"].shape[0] // SEQ)
            assert int(batch["lang_tokens"][dm.languages.index(lang)]) == batch["num_tokens"]
            masked += int((batch["labels"] != -100).sum())
            total += batch["num_tokens"]
    assert masked / total == pytest.approx(0.15 * 0.9, abs=0.02)  # specials (~10%) are never masked


def test_mixture_report_and_json(tmp_path: Path) -> None:
    dm = make_dm(subset="decay-eng")
    take(dm, 5)
    report = dm.mixture_report()
    assert report["tau"] == 0.5 and list(report["languages"]) == dm.languages
    assert sum(v["weight"] for v in report["languages"].values()) == pytest.approx(1.0)
    realised = dm.realised_tokens
    assert sum(realised.values()) == sum(v["realised_tokens"] for v in report["languages"].values()) > 0
    counts = dm.mix.token_counts()
    assert counts["eng_Latn"] == round(3.0 * SampleMix(subset="decay-cont").token_counts()["eng_Latn"])
    dm.write_mixture_json(tmp_path / "run" / "mixture.json")
    assert json.loads((tmp_path / "run" / "mixture.json").read_text()) == json.loads(json.dumps(report))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_sees_exactly_the_same_batches(num_workers: int) -> None:
    total, k = 24, 10  # 5 x 4 + 5 x 3 = 35 rows: an odd count, so the next row is worker 1's
    ref = make_dm(num_workers)
    it = ref.train_batches()
    expected = []
    for i in range(total):
        if i == 5:  # knobs changed mid-run must be part of the state
            ref.set_step_rows(3)
            ref.set_mask_ratio(0.2)
        expected.append(next(it))

    run = make_dm(num_workers)
    it = run.train_batches()
    for i in range(k):
        if i == 5:
            run.set_step_rows(3)
            run.set_mask_ratio(0.2)
        assert same(next(it), expected[i])
    buf = io.BytesIO()
    torch.save(run.state_dict(), buf)  # as in a checkpoint
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # how Lightning loads checkpoints

    resumed = make_dm(num_workers)
    resumed.setup("fit")
    resumed.load_state_dict(state)
    assert resumed.step_rows == 3 and resumed.mask_ratio == 0.2
    got = take(resumed, total - k)
    assert all(same(a, b) for a, b in zip(got, expected[k:], strict=True))
    assert resumed.realised_tokens == ref.realised_tokens


def test_resume_needs_the_same_setup() -> None:
    dm = make_dm()
    take(dm, 2)
    state = dm.state_dict()
    with pytest.raises(DataError, match="num_workers"):
        make_dm(num_workers=2).load_state_dict(state)
    with pytest.raises(DataError, match="seq_len"):
        make_dm(seq_len=64).load_state_dict(state)
    with pytest.raises(DataError, match="mixture"):
        make_dm(tau=0.7).load_state_dict(state)


def test_validation_only_languages() -> None:
    # a pre-training run can still track languages it does not train on (they have a test split)
    dm = MLMDataModule(
        SampleMix(subset="pretrain", val_languages=["fao_Latn", "eng_Latn"]), seq_len=SEQ, rows_per_device=2,
        tau=0.7, mask_ratio=0.3,
    )  # fmt: skip
    assert "fao_Latn" not in dm.languages and dm.val_languages == ["fao_Latn", "eng_Latn"]
    fao, eng = (next(iter(loader)) for loader in dm.val_dataloader())
    assert int(fao["lang_tokens"].sum()) == 0 < fao["num_tokens"]
    assert int(eng["lang_tokens"][dm.languages.index("eng_Latn")]) == eng["num_tokens"]
    with pytest.raises(DataError, match="'zzz' is not a training language"):
        MLMDataModule(SampleMix(subset="pretrain"), seq_len=SEQ, rows_per_device=2, tau=0.7, mask_ratio=0.3,
                      val_languages=["zzz"]).setup()  # fmt: skip
