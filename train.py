"""Train an mmBERT encoder: `python train.py phase=decay model=small` (see README.md)."""

import hydra
from omegaconf import DictConfig

import mmbert.train.config  # noqa: F401  (registers the ${scaled:...} and ${by_phase:...} resolvers)
from mmbert.cli import user_errors
from mmbert.train.run import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors("train.py"):
        run(cfg)


if __name__ == "__main__":
    main()
