"""Train an mmBERT encoder: ``python train.py phase=decay model=small`` or ``mmbert-train ...`` (README.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import mmbert.train.config  # noqa: F401  (registers the ${scaled:...} and ${by_phase:...} resolvers)
from mmbert.cli.conf import CONF_DIR
from mmbert.cli.errors import user_errors
from mmbert.train.run import run


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors("train.py"):
        run(cfg)


if __name__ == "__main__":
    main()
