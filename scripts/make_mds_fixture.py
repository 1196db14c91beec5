"""Write ``tests/fixtures/mds``: tiny pre-tokenized MDS shards made by the real ``mosaicml-streaming``.

The fixture checks that :mod:`mmbert.data.mds` reads what MosaicML's writer produces. ``mosaicml-streaming``
cannot be installed beside this project's stack, so it is installed aside and its optional imports stubbed:

    pip install --no-deps --target /tmp/mds mosaicml-streaming zstd brotli python-snappy cramjam catalogue
    PYTHONPATH=/tmp/mds python scripts/make_mds_fixture.py

Layout, like the released mmBERT data: ``train/<source>/<chunk>/index.json + shard.NNNNN.mds[.zstd]`` with a
merged ``train/index.json``. ``eng_Latn`` is uncompressed ``ndarray:uint32``; ``fao_Latn`` is zstd-compressed
with the generic ``ndarray`` encoding. Documents are sample-corpus texts tokenized with ``data/tokenizer``,
``<bos>`` first and pre-chunked to 256 tokens. ``expected.json`` lists every document's id and ids.

The script also writes shards with :class:`mmbert.data.MdsWriter` and reads them back with the real library.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

for stub in ("streaming.vision", "streaming.multimodal", "streaming.text"):  # they need torchvision
    sys.modules[stub] = types.ModuleType(stub)

from streaming import MDSWriter as RealWriter  # noqa: E402
from streaming import StreamingDataset  # noqa: E402
from streaming.base.util import merge_index  # noqa: E402

from mmbert.data import FolderMix, MdsMix, MdsWriter  # noqa: E402
from mmbert.data.tokenizer import load_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "mds"
SOURCES = {
    "eng_Latn": ("ndarray:uint32", None, 24),
    "fao_Latn": ("ndarray", "zstd", 12),
}  # encoding, zip, docs
CHUNK = 256


def documents(lang: str, n: int) -> list[tuple[str, np.ndarray]]:
    tok = load_tokenizer("data/tokenizer")
    texts = FolderMix("data/sample", languages=[lang]).train_source(lang).first_docs(n)
    out = []
    for i, text in enumerate(texts):
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        for k, lo in enumerate(range(0, len(ids), CHUNK)):
            out.append((f"{lang}-{i:04d}-{k}", np.asarray(ids[lo : lo + CHUNK], dtype=np.uint32)))
    return out


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    expected: dict[str, dict[str, list[int]]] = {}
    index_files = []
    for lang, (encoding, compression, n) in SOURCES.items():
        docs = documents(lang, n)
        expected[lang] = {doc_id: ids.tolist() for doc_id, ids in docs}
        half = len(docs) // 2
        for c, part in enumerate((docs[:half], docs[half:])):
            out = OUT / "train" / lang / f"chunk{c}"
            columns = {"input_ids": encoding, "id": "str"}
            with RealWriter(out=str(out), columns=columns, compression=compression, size_limit=4096) as w:
                for doc_id, ids in part:
                    w.write({"input_ids": ids, "id": doc_id})
            index_files.append(str(out / "index.json"))
    merge_index(index_files, str(OUT / "train"))
    (OUT / "expected.json").write_text(json.dumps(expected, sort_keys=True) + "\n")
    MdsMix(str(OUT), tokenizer="data/tokenizer").token_counts()  # commits the token-count cache
    print(f"wrote {OUT}")

    # The other direction: shards written by our writer, read by the real library.
    with tempfile.TemporaryDirectory() as tmp:
        docs = documents("fao_Latn", 6)
        for compression in (None, "zstd"):
            out = Path(tmp) / str(compression)
            with MdsWriter(out, {"input_ids": "ndarray:uint32", "id": "str"}, 2048, compression) as w:
                for doc_id, ids in docs:
                    w.write({"input_ids": ids, "id": doc_id})
            ds = StreamingDataset(local=str(out), shuffle=False, batch_size=1)
            got = [(s["id"], s["input_ids"].tolist()) for s in ds]
            assert got == [(i, ids.tolist()) for i, ids in docs], f"mismatch ({compression})"
    print("mmbert.data.MdsWriter shards read back by streaming.StreamingDataset: identical")


if __name__ == "__main__":
    main()
