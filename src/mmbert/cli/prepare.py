"""Raw text -> pre-tokenized MDS shards (:mod:`mmbert.data.prepare`).

    mmbert-prepare source=DIR out=DIR [tokenizer=data/tokenizer] [workers=N] [chunk=0]
        [compression=null|zstd] [languages=[rus_Cyrl,...]] [name=LANG] [text_field=text] [split=train]
        [size_limit=67108864] [batch=512]

(``python -m mmbert.cli.prepare ...`` is the same command.) Each ``key=value`` sets a field of
:class:`mmbert.data.prepare.PrepareConfig`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmbert.cli.errors import user_errors
from mmbert.data import prepare as prepare_module
from mmbert.data.counts import CACHE_NAME
from mmbert.data.prepare import PrepareConfig, prepare
from mmbert.errors import DataError


def parse_args(argv: Sequence[str]) -> PrepareConfig:
    schema = OmegaConf.structured(PrepareConfig)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(list(argv)))
    except OmegaConfBaseException as e:
        raise DataError(f"{' '.join(str(e).split())}") from e
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, PrepareConfig)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\n" + prepare_module.__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors("prepare"):
        counts = prepare(parse_args(argv))
    total = sum(c["tokens"] for c in counts.values())
    print(f"prepare: {len(counts)} languages, {total:,} tokens; counts in {CACHE_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
