"""Compose conf/ into params.yaml the way `dvc exp run` does, and check the result first.

`cnn-pipeline params` and the `dvc exp run` guard in hydra_plugins/ both use this module:
each override is checked against conf/ (an unknown group option lists the options, a
misspelt key names the nearest one), the composition is validated by the stages' own
validators (config.py), and the values of params.yaml that a composition would throw away
without being asked to (hand edits) are named.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnn_pipeline import config, paths
from cnn_pipeline.errors import UserError, first_line

CONFIG_NAME = "config"  # conf/config.yaml, as .dvc/config's hydra section names it
EXPERIMENT_GROUP = "experiment"  # presets that override several groups at once


def find_repository_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding dvc.yaml and conf/, else git's top level."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() and (folder / paths.CONFIG_DIR).is_dir():
            return folder
    try:
        top_level = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=start,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        top_level = ""
    if top_level and (Path(top_level) / paths.CONFIG_DIR).is_dir():
        return Path(top_level)
    raise UserError(
        f"no folder at or above {start} holds dvc.yaml and {paths.CONFIG_DIR}/: run "
        "`cnn-pipeline params` inside the repository, or give --config-dir and --output"
    )


@dataclass(frozen=True)
class Override:
    text: str  # as the user wrote it, e.g. "train.epochs=5"
    key: str  # "train.epochs", or a group such as "data"
    value: object
    is_group: bool
    is_sweep: bool


def parse_overrides(config_dir: Path, overrides: list[str]) -> list[Override]:
    """Parse Hydra override strings, with a one-line error for one that is not valid syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as error:
            raise UserError(
                f"{text} is not a valid override ({first_line(error)}): write KEY=VALUE, "
                "e.g. train.epochs=5 or data=mnist"
            ) from None
        key = override.key_or_group
        parsed.append(
            Override(
                text,
                key,
                None if override.is_delete() else override.value(),
                (config_dir / key).is_dir(),
                override.is_sweep_override(),
            )
        )
    return parsed


def _group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(path.stem for path in (config_dir / group).glob("*.yaml"))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}; lists are values, not branches."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _compose(config_dir: Path, overrides: list[str]) -> str:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(config_dir.resolve()), version_base=None):
        composed = compose(config_name=CONFIG_NAME, overrides=overrides)
    OmegaConf.resolve(composed)
    return OmegaConf.to_yaml(composed)


def _explain_failure(config_dir: Path, parsed: list[Override]) -> str | None:
    """Why Hydra refused these overrides, for the mistakes people make: a key or group that
    does not exist (with the nearest one). None when it is none of those."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    groups = [path.name for path in config_dir.iterdir() if path.is_dir()]
    group_overrides = [override.text for override in parsed if override.is_group]
    try:
        known = _flatten(yaml.safe_load(_compose(config_dir, group_overrides)))
    except (HydraException, OmegaConfBaseException):
        return None  # the group overrides fail by themselves: Hydra's own line says why
    for override in parsed:
        if override.is_group or override.text.startswith("+") or override.key in known:
            continue
        if any(name.startswith(override.key + ".") for name in known):
            return f"{override.text}: {override.key} is a section, not a value: set one of its keys"
        parent, _, _ = override.key.rpartition(".")
        siblings = sorted(
            {
                name.removeprefix(f"{parent}.").split(".")[0]
                for name in known
                if not parent or name.startswith(f"{parent}.")
            }
            | (set() if parent else set(groups))
        )
        hint = config.nearest_key_hint(override.key, siblings)
        return f"{override.text}: conf/ has no key {override.key}: {hint}"
    return None


def compose_params(config_dir: Path, overrides: list[str]) -> str:
    """Return the YAML text DVC would write to params.yaml for these Hydra overrides.

    DVC 3.67 (dvc/utils/hydra.py) composes with Hydra, resolves interpolations, and writes
    `OmegaConf.to_yaml(cfg)`; doing the same keeps `dvc exp run` from rewriting params.yaml
    when nothing changed. Overrides are checked first, so that a mistake gets a reason.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parsed = parse_overrides(config_dir, overrides)
    for override in parsed:
        if override.is_sweep:
            raise UserError(
                f"{override.text} is a sweep: params.yaml holds one configuration; queue one "
                f"experiment per value with `dvc exp run --queue -S '{override.text}'`"
            )
        if override.is_group and isinstance(override.value, str):
            options = _group_options(config_dir, override.key)
            if override.value not in options:
                match = config.nearest(override.value, options)
                hint = f"did you mean {override.key}={match}? " if match else ""
                raise UserError(
                    f"{override.text}: conf/{override.key}/ has no {override.value}.yaml: "
                    f"{hint}choose one of {', '.join(options)}"
                )
    try:
        return _compose(config_dir, overrides)
    except (HydraException, OmegaConfBaseException) as error:
        explained = _explain_failure(config_dir, parsed)
        raise UserError(
            explained or f"cannot compose {config_dir} with {overrides}: {first_line(error)}"
        ) from None


def check_composed(text: str) -> dict[str, Any]:
    """Validate a composed params.yaml with the stages' own validators; return it parsed."""
    params: dict[str, Any] = yaml.safe_load(text)
    config.check_params(params)
    return params


@dataclass(frozen=True)
class LostEdit:
    key: str  # "train.optimizer"
    value: object  # params.yaml's value, which the composition drops
    composed: object  # what the composition puts there instead (MISSING: no such key)

    def describe(self) -> str:
        now = "no such key" if self.composed is MISSING else repr(self.composed)
        return f"{self.key} = {self.value!r} (conf/: {now})"

    def as_override(self) -> str:
        """The Hydra override that keeps the value: train.optimizer=sgd, model.filters=[32,64]."""
        value = json.dumps(self.value) if not isinstance(self.value, str) else self.value
        sign = "+" if self.composed is MISSING else ""
        return f"{sign}{self.key}={value}"


MISSING = object()  # a key that one side does not have


def discarded_edits(
    current: dict[str, Any],
    composed: dict[str, Any],
    defaults: dict[str, Any],
    overrides: list[Override],
) -> list[LostEdit]:
    """The values of params.yaml (`current`) that a composition replaces without being asked:
    `composed` changes them back to what conf/ gives by default, and no override names
    them. They are hand edits, or an earlier composition's overrides.
    """
    named = [override.key for override in overrides if override.key != EXPERIMENT_GROUP]
    flat_composed, flat_defaults = _flatten(composed), _flatten(defaults)
    lost = []
    for key, old in _flatten(current).items():
        new = flat_composed.get(key, MISSING)
        if new == old or new != flat_defaults.get(key, MISSING):
            continue  # kept, or changed on purpose by a group, a preset or an override
        if any(key == name or key.startswith(f"{name}.") for name in named):
            continue
        lost.append(LostEdit(key, old, new))
    return lost


def describe_lost(lost: list[LostEdit], shown: int = 3) -> str:
    """'train.optimizer = 'sgd' (conf/: 'adam'), ... and 2 more' for a one-line warning."""
    more = f" and {len(lost) - shown} more" if len(lost) > shown else ""
    return ", ".join(edit.describe() for edit in lost[:shown]) + more


def edits_lost_by(config_dir: Path, params_file: Path, overrides: list[str]) -> list[LostEdit]:
    """What composing conf/ with `overrides` over `params_file` would throw away (see
    `discarded_edits`). Sweep overrides are left out of the composition (each value of a
    sweep is one composition) but still count as naming their key."""
    if not params_file.is_file():
        return []
    try:
        current = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return []
    if not isinstance(current, dict):
        return []
    parsed = parse_overrides(config_dir, overrides)
    single = [override.text for override in parsed if not override.is_sweep]
    composed = yaml.safe_load(compose_params(config_dir, single))
    defaults = yaml.safe_load(compose_params(config_dir, []))
    return discarded_edits(current, composed, defaults, parsed)


def dvc_exp_run_warning(argv: list[str], cwd: Path) -> str | None:
    """The one-line warning for a `dvc exp run` (this process's command line, `argv`) whose
    Hydra composition is about to replace params.yaml: the hand edits it loses and how to
    keep them, or the error the composed params.yaml will stop at. None when there is
    nothing to say, or when `argv` is not a `dvc exp run` that composes.

    hydra_plugins/ calls it while DVC 3.67 composes (dvc/repo/experiments/queue/base.py,
    `_update_params`): the workspace's params.yaml is then still the user's own, for
    workspace, --temp and --queue runs alike. At stage time it is too late: the
    experiment's commit holds only the composed file, and DVC records no overrides.
    """
    from dvc.cli import parse_args
    from dvc.commands.experiments.run import CmdExperimentsRun
    from dvc.utils.cli_parse import to_path_overrides

    if not argv or Path(argv[0]).stem != "dvc":
        return None  # DVC's Python API, say: no command line to read the overrides from
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            arguments = parse_args(argv[1:])
    except (SystemExit, Exception):
        return None
    if getattr(arguments, "func", None) is not CmdExperimentsRun or arguments.no_hydra:
        return None
    overrides = to_path_overrides(arguments.set_param or []).get(str(paths.PARAMS_FILE), [])
    params_file = cwd / paths.PARAMS_FILE  # DVC writes this relative path
    config_dir = find_repository_root(cwd) / paths.CONFIG_DIR
    try:
        parsed = parse_overrides(config_dir, overrides)
        single = [override.text for override in parsed if not override.is_sweep]
        check_composed(compose_params(config_dir, single))
        lost = edits_lost_by(config_dir, params_file, overrides)
    except UserError as error:
        return f"cnn-pipeline: the stages will refuse this params.yaml: {error}"
    if not lost:
        return None
    keep = " ".join(f"-S {edit.as_override()}" for edit in lost)
    return (
        f"cnn-pipeline: dvc exp run recomposes params.yaml from conf/ and loses "
        f"{describe_lost(lost)}: to keep that, add {keep} (or use `dvc exp run --no-hydra`, "
        "which applies -S to params.yaml as it is)"
    )


def print_dvc_exp_run_warning(argv: list[str]) -> None:
    """Print `dvc_exp_run_warning` to stderr, if any: what hydra_plugins/ runs, in a process
    of its own, so that its Hydra composition leaves DVC's Hydra state alone."""
    try:
        warning = dvc_exp_run_warning(argv, Path.cwd())
    except Exception as error:  # a broken guard must not break `dvc exp run`
        warning = f"cnn-pipeline: cannot check params.yaml for hand edits: {first_line(error)}"
    if warning:
        print(warning, file=sys.stderr)
