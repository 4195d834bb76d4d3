"""The values of params.yaml that composing conf/ would throw away without being asked to:
hand edits, or an earlier composition's overrides. `cnn-pipeline params` warns about them
before it writes, and hydra_plugins/ before `dvc exp run` recomposes params.yaml; both name
the `-S` overrides that keep them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnn_pipeline import paths
from cnn_pipeline.compose import (
    EXPERIMENT_GROUP,
    Override,
    check_composed,
    compose_params,
    find_repository_root,
    flatten,
    parse_overrides,
)
from cnn_pipeline.errors import UserError, first_line


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
    flat_composed, flat_defaults = flatten(composed), flatten(defaults)
    lost = []
    for key, old in flatten(current).items():
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
