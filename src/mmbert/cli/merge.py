"""Merge checkpoints into a Hugging Face folder (settings: conf/merge.yaml).

python merge.py method=ties base=PATH "models=[P1,P2,P3]" density=0.4 output_dir=OUT   (or mmbert-merge ...)
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from mmbert.cli.conf import CONF_DIR
from mmbert.cli.errors import user_errors
from mmbert.merge import run_merge


@hydra.main(config_path=CONF_DIR, config_name="merge", version_base=None)
def main(cfg: DictConfig) -> None:
    # A bad setting or input is the user's to fix: one clear line, not a traceback.
    with user_errors("merge.py"):
        run_merge(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
