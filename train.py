"""Train an mmBERT encoder: `python train.py phase=decay model=small` (see README.md; the app is
:mod:`mmbert.cli.train`)."""

from mmbert.cli.train import main

if __name__ == "__main__":
    main()
