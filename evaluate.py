"""Downstream evaluation of a checkpoint (settings: conf/eval.yaml, tasks: conf/task/).

python evaluate.py task=classify model.path=CKPT task.train_file=F task.test_file=F
python evaluate.py task=retrieve model.path=CKPT task.test_file=F
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmbert.config import ConfigError
from mmbert.data.errors import DataError
from mmbert.downstream import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        task = instantiate(OmegaConf.to_container(cfg.task, resolve=True), _convert_="all")
        evaluate(
            task,
            cfg.model.path,
            tokenizer=cfg.model.tokenizer,
            seed=int(cfg.seed),
            device=str(cfg.device),
            out_dir=HydraConfig.get().runtime.output_dir,
        )
    except (ConfigError, DataError) as err:
        # Bad settings or data are the user's to fix: one clear line, not a traceback.
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
