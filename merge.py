"""Merge checkpoints into a Hugging Face folder (settings: conf/merge.yaml; the app is :mod:`mmbert.cli.merge`).

python merge.py method=ties base=PATH "models=[P1,P2,P3]" density=0.4 output_dir=OUT
"""

from mmbert.cli.merge import main

if __name__ == "__main__":
    main()
