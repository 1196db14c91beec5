"""Train an mmBERT encoder: ``python train.py phase=decay model=small`` or ``mmbert-train ...`` (README.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import mmbert.train.config  # noqa: F401  (registers the ${scaled:...} and ${by_phase:...} resolvers)
from mmbert.cli.conf import CONF_DIR
from mmbert.cli.errors import user_errors
from mmbert.cli.overrides import check_override_keys
from mmbert.train.run import run


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _app(cfg: DictConfig) -> None:
    with user_errors("train.py"):
        run(cfg)


def main() -> None:
    # Before Hydra composes: a misspelt key is one line naming the closest one (Hydra's own: five lines).
    with user_errors("train.py"):
        check_override_keys(CONF_DIR, "train")
    _app()


if __name__ == "__main__":
    main()
