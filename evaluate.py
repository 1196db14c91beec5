"""Downstream evaluation of a checkpoint (settings: conf/eval.yaml, tasks: conf/task/; the app is
:mod:`mmbert.cli.evaluate`).

python evaluate.py task=classify model.path=CKPT task.train_file=F task.test_file=F
python evaluate.py task=retrieve model.path=CKPT task.test_file=F
"""

from mmbert.cli.evaluate import main

if __name__ == "__main__":
    main()
