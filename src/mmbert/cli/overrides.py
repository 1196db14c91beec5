"""A misspelt override (``optimzer.lr=1e-3``) named in one line with the closest key the config has, before
Hydra composes: Hydra itself ends with five lines and exit status 1, unlike every other bad input.

The check composes the app's config with the command line's overrides through Hydra's compose API, so it
sees exactly what Hydra will: config groups chosen on the command line, ``+key=value`` appends, deletions.
A sweep (``-m`` with ``a=1,2``) is checked with its first value, which has the same keys. Any other
composition problem (an unknown group option, a syntax error) is left to Hydra, which reports it itself.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from mmbert.errors import ConfigError

# Hydra 1.3's message when a plain override names a key the struct config lacks (config_loader_impl.py).
_UNKNOWN_KEY = re.compile(r"^Could not override '([^']+)'\.")


def check_override_keys(conf_dir: str, config_name: str, argv: list[str] | None = None) -> None:
    """ConfigError naming the first override of ``argv`` (default: this command line) whose key is not in
    the composed config, and the closest key that is; nothing for a command line Hydra composes."""
    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.help or args.hydra_help or args.shell_completion or args.config_dir or args.config_path:
        return  # nothing composed, or another config than this app's
    try:
        typed = _first_of_each_sweep(args.overrides)
    except HydraException:
        return  # a syntax error: Hydra's own message points at it
    overrides = list(typed)
    config_name = args.config_name or config_name
    unknown = _unknown_key(conf_dir, config_name, overrides)
    if unknown is None:
        return
    override, key = unknown
    # The keys to suggest from: the config the other overrides compose (a group choice changes them).
    rest = [o for o in overrides if o != override]
    while (other := _unknown_key(conf_dir, config_name, rest)) is not None:
        rest.remove(other[0])
    cfg = _compose(conf_dir, config_name, rest)
    close = difflib.get_close_matches(key, list(_dotted_keys(cfg)), n=1) if cfg is not None else []
    hint = f"did you mean {close[0]}? " if close else ""
    as_typed = typed[override]
    raise ConfigError(
        f"{as_typed}: {config_name}.yaml has no key {key} ({hint}to add a new key, write +{as_typed})"
    )


def _first_of_each_sweep(overrides: list[str]) -> dict[str, str]:
    """The command line's overrides, each sweep (``a=1,2``, ``range(...)``) replaced by its first value, each
    mapped to the override as typed; a sweep without one (an interval, for optimizing sweepers) is left out."""
    out = {}
    for parsed in OverridesParser.create().parse_overrides(overrides):
        line = str(parsed.input_line)
        if not parsed.is_sweep_override():
            out[line] = line
            continue
        try:
            first = next(parsed.sweep_string_iterator())
        except (HydraException, StopIteration):
            continue
        out[f"{parsed.get_key_element()}={first}"] = line
    return out


def _compose(conf_dir: str, config_name: str, overrides: list[str]) -> DictConfig | None:
    """The config Hydra composes from these overrides; None where it cannot (reported elsewhere)."""
    try:
        return _compose_or_raise(conf_dir, config_name, overrides)
    except HydraException:
        return None


def _compose_or_raise(conf_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()  # the app initialises Hydra itself


def _unknown_key(conf_dir: str, config_name: str, overrides: list[str]) -> tuple[str, str] | None:
    """The first override whose key the config lacks and that key, or None."""
    try:
        _compose_or_raise(conf_dir, config_name, overrides)
    except ConfigCompositionException as err:
        match = _UNKNOWN_KEY.match(str(err))
        if match and isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)):
            key = match.group(1)
            return next(o for o in overrides if o.split("=", 1)[0] == key), key
    except HydraException:
        pass
    return None


def _dotted_keys(cfg: DictConfig) -> Iterator[str]:
    """Every key of the config, nested ones dotted (``optimizer``, ``optimizer.lr``); values unresolved."""

    def walk(node: object, prefix: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield f"{prefix}{key}"
                yield from walk(value, f"{prefix}{key}.")

    yield from walk(OmegaConf.to_container(cfg, resolve=False), "")
