"""Write the toy downstream tasks from a corpus's sentences (:mod:`mmbert.downstream.toy`).

    mmbert-toy-tasks [CORPUS=data/sample] [OUT_DIR=outputs/toy_tasks] [--format jsonl|parquet|csv]

(``python -m mmbert.cli.toy_tasks ...`` is the same command.) Prints each task and its files.
"""

from __future__ import annotations

import argparse

from mmbert.downstream.toy import write_toy_tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mmbert-toy-tasks", description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", default="data/sample")
    parser.add_argument("out_dir", nargs="?", default="outputs/toy_tasks")
    parser.add_argument("--format", choices=("jsonl", "parquet", "csv"), default="jsonl")
    args = parser.parse_args(argv)
    for task, files in write_toy_tasks(args.corpus, args.out_dir, args.format).items():
        print(task, " ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    main()
