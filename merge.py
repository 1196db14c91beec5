"""Merge checkpoints into a Hugging Face folder (settings: conf/merge.yaml).

python merge.py method=ties base=PATH "models=[P1,P2,P3]" density=0.4 output_dir=OUT
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from mmbert.merge import MergeError, run_merge


@hydra.main(config_path="conf", config_name="merge", version_base=None)
def main(cfg: DictConfig) -> None:
    values = OmegaConf.to_container(cfg, resolve=True)
    try:
        run_merge(values)  # type: ignore[arg-type]
    except MergeError as err:
        # A bad setting or input is the user's to fix: one clear line, not a traceback.
        print(f"merge.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
