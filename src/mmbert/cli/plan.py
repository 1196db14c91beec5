"""Mixture plan of a train config, offline (:mod:`mmbert.data.plan`): what each language of a phase gets,
before any data is read.

    mmbert-plan phase=decay data_mix=decay-all model=base [token_scale=0.01]
        [top=20] [max_passes=4] [out=plan.json] [count=estimate|exact]

(``python -m mmbert.cli.plan ...`` is the same command.) Takes train.py's ``key=value`` overrides and
composes ``conf/train.yaml`` of the repository root (:func:`mmbert.data.paths.repo_root`) with Hydra's
compose API; prints ``top`` lines of the plan, largest share first, then a summary line, and with
``out=FILE`` writes the plan as JSON. ``count=estimate|exact`` measures (and caches) the token counts of a
folder mix that are not cached yet, instead of refusing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mmbert.cli.errors import user_errors
from mmbert.data import plan as plan_module
from mmbert.data.counts import check_method
from mmbert.data.mix.build import one_line
from mmbert.data.paths import repo_root
from mmbert.data.plan import format_plan, plan, plan_header
from mmbert.errors import DataError
from mmbert.train.config import compose_train as compose_train_config
from mmbert.train.config import scaled_tokens

DEFAULT_TOP = 20
DEFAULT_MAX_PASSES = 4.0
USAGE = (
    "usage: mmbert-plan [train.py overrides: phase=... data_mix=... model=... token_scale=...] "
    "[top=N] [max_passes=X] [out=FILE] [count=estimate|exact]"
)


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``({top, max_passes, out, count}, Hydra overrides)``; each override is parsed so a bad one is named."""
    options: dict[str, Any] = {
        "top": DEFAULT_TOP,
        "max_passes": DEFAULT_MAX_PASSES,
        "out": None,
        "count": None,
    }
    overrides: list[str] = []
    parser = OverridesParser.create()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = _option(key, value)
            continue
        try:
            parser.parse_overrides([arg])
        except HydraException as e:
            raise DataError(f"override {arg!r}: {one_line(e)}") from e
        overrides.append(arg)
    return options, overrides


def _option(key: str, value: str) -> Any:
    if key == "out":
        return Path(value)
    if key == "count":
        return check_method(value, "count")
    try:
        number = int(value) if key == "top" else float(value)
    except ValueError as e:
        kind = "an integer" if key == "top" else "a number"
        raise DataError(f"{key} must be {kind}, got {value!r}") from e
    if number < 0:
        raise DataError(f"{key} must be >= 0, got {value!r}")
    return number


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, as train.py composes it (Hydra's run-time values left out)."""
    conf = repo_root() / "conf"
    if not (conf / "train.yaml").is_file():
        raise DataError(f"{conf / 'train.yaml'} not found: run from a checkout, or set MMBERT_ROOT")
    try:
        return compose_train_config(list(overrides), conf_dir=conf)
    except HydraException as e:
        raise DataError(one_line(e)) from e


def plan_of(cfg: DictConfig, count: str | None = None) -> tuple[str, dict[str, Any]]:
    """The plan of a composed train config: its header line and the report (``mixture.json`` schema);
    ``count`` measures the mix's missing token counts (:func:`mmbert.data.plan.plan`)."""
    try:
        phase, tau, budget = cfg.phase.name, cfg.phase.tau, scaled_tokens(cfg, "recipe.tokens")
    except OmegaConfBaseException as e:
        raise DataError(one_line(e)) from e
    mix, report = plan(cfg.data_mix, tau, budget, count)
    return plan_header(mix, phase, tau, budget), report


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\n" + plan_module.__doc__ + "\n" + USAGE)
        return 0
    with user_errors("plan"):
        options, overrides = parse_args(argv)
        cfg = compose_train(overrides)
        header, report = plan_of(cfg, options["count"])
    print(format_plan(report, header, options["top"], options["max_passes"]))
    if options["out"] is not None:
        out: Path = options["out"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
