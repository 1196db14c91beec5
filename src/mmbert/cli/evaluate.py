"""Downstream evaluation of a checkpoint (settings: conf/eval.yaml, tasks: conf/task/).

python evaluate.py task=classify model.path=CKPT task.train_file=F task.test_file=F   (or mmbert-evaluate ...)
python evaluate.py task=retrieve model.path=CKPT task.test_file=F
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmbert.cli.conf import CONF_DIR
from mmbert.cli.errors import user_errors
from mmbert.cli.overrides import check_override_keys
from mmbert.downstream import evaluate


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def _app(cfg: DictConfig) -> None:
    with user_errors("evaluate.py"):
        task = instantiate(OmegaConf.to_container(cfg.task, resolve=True), _convert_="all")
        evaluate(
            task,
            cfg.model.path,
            tokenizer=cfg.model.tokenizer,
            seed=int(cfg.seed),
            device=str(cfg.device),
            out_dir=HydraConfig.get().runtime.output_dir,
        )


def main() -> None:
    # Before Hydra composes: a misspelt key is one line naming the closest one (Hydra's own: five lines).
    with user_errors("evaluate.py"):
        check_override_keys(CONF_DIR, "eval")
    _app()


if __name__ == "__main__":
    main()
