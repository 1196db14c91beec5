"""Merge checkpoints into a Hugging Face folder (settings: conf/merge.yaml, the method's in conf/method/).

python merge.py method=ties base=PATH "models=[P1,P2,P3]" density=0.4 output_dir=OUT   (or mmbert-merge ...)
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mmbert.cli.conf import CONF_DIR
from mmbert.cli.errors import user_errors
from mmbert.cli.overrides import check_override_keys
from mmbert.merge import MergeConfig, refuse_other_methods_keys, run_merge


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="merge")
def _app(cfg: DictConfig) -> None:
    # A bad setting or input is the user's to fix: one clear line, not a traceback.
    with user_errors("merge.py"):
        run_merge(MergeConfig.from_composed(cfg))


def main() -> None:
    # Before Hydra composes: a key of another method is named in one line with the method it does not fit,
    # a misspelt key with the closest one.
    with user_errors("merge.py"):
        refuse_other_methods_keys(sys.argv[1:], Path(CONF_DIR))
        check_override_keys(CONF_DIR, "merge")
    _app()


if __name__ == "__main__":
    main()
