"""The values of params.yaml that composing conf/ would throw away without being asked to:
hand edits, a committed group switch, or an earlier composition's overrides.

No way of experimenting loses one of them silently. `cnn-pipeline params` carries them into
what it composes (`--reset` drops them, and says which). `dvc exp run` recomposes params.yaml
from conf/ with only the `-S` it is given, so hydra_plugins/ stops it before it writes or
queues anything, and prints the same command with the fewest `-S` that keep them: a network
switched in params.yaml is kept by `-S model=lenet5`, not by one `-S` per model key.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
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
from cnn_pipeline.config import load_yaml
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
        return _override(self.key, self.value, present=self.composed is not MISSING)


MISSING = object()  # a key that one side does not have


def _override(key: str, value: object, present: bool) -> str:
    """`key=value` as Hydra reads it; `+key=value` for a key the composition does not have."""
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"{'' if present else '+'}{key}={text}"


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


def _flat_composition(config_dir: Path, overrides: list[str]) -> dict[str, Any]:
    return flatten(yaml.safe_load(compose_params(config_dir, overrides)))


def _group_candidates(config_dir: Path, lost: list[LostEdit], named: set[str]) -> list[str]:
    """Group options that might explain several lost values at once: `model=lenet5` for the
    groups holding a lost key, and every preset of conf/experiment/."""
    candidates = []
    for group in sorted(path for path in config_dir.iterdir() if path.is_dir()):
        holds_a_lost_key = any(edit.key.startswith(f"{group.name}.") for edit in lost)
        if group.name in named or not (group.name == EXPERIMENT_GROUP or holds_a_lost_key):
            continue
        candidates += [f"{group.name}={option.stem}" for option in sorted(group.glob("*.yaml"))]
    return candidates


@dataclass(frozen=True)
class KeptEdits:
    lost: list[LostEdit]  # what composing with the user's overrides alone would drop
    overrides: list[str]  # the fewest overrides that keep all of it: group options, then keys


def overrides_that_keep(
    config_dir: Path, current: dict[str, Any], overrides: list[str]
) -> KeptEdits:
    """The overrides to add to `overrides` so that composing conf/ keeps every value of
    params.yaml (`current`) that no override asked to change (see `discarded_edits`).

    Group options come first, chosen greedily while one brings the composition closer to
    what is kept (lenet5's five keys are one `model=lenet5`); the values still missing are
    then named one by one. A group option that would also change a value nobody asked to
    change is never chosen. Sweep overrides are left out of the compositions (each value of
    a sweep is one composition) but still count as naming their key.
    """
    parsed = parse_overrides(config_dir, overrides)
    single = [override.text for override in parsed if not override.is_sweep]
    composed = yaml.safe_load(compose_params(config_dir, single))
    defaults = yaml.safe_load(compose_params(config_dir, []))
    lost = discarded_edits(current, composed, defaults, parsed)
    if not lost:
        return KeptEdits([], [])
    flat_current, flat_composed = flatten(current), flatten(composed)
    lost_values = {edit.key: edit.value for edit in lost}
    groups: list[str] = []
    remaining = set(lost_values)
    candidates = _group_candidates(config_dir, lost, {override.key for override in parsed})
    while remaining and candidates:
        scored = []
        for candidate in candidates:
            try:
                flat = _flat_composition(config_dir, [*groups, candidate, *single])
            except UserError:
                continue
            changes_another_value = any(
                flat.get(key, MISSING) != flat_composed.get(key, MISSING)
                for key in flat_current
                if key not in lost_values
            )
            if not changes_another_value:
                still_lost = {
                    key for key, value in lost_values.items() if flat.get(key, MISSING) != value
                }
                scored.append((len(still_lost), candidate, still_lost))
        if not scored or min(scored)[0] >= len(remaining):
            break
        _, chosen, remaining = min(scored)
        groups.append(chosen)
        group = chosen.split("=")[0]
        candidates = [option for option in candidates if not option.startswith(f"{group}=")]
    present = _flat_composition(config_dir, [*groups, *single]) if groups else flat_composed
    keys = [
        _override(edit.key, edit.value, present=edit.key in present)
        for edit in lost
        if edit.key in remaining
    ]
    return KeptEdits(lost, groups + keys)


def _read_current(params_file: Path) -> dict[str, Any] | None:
    """params.yaml as the stages read it; None where it is missing or not a mapping."""
    try:
        current = load_yaml(params_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return current if isinstance(current, dict) else None


def kept_edits(config_dir: Path, params_file: Path, overrides: list[str]) -> KeptEdits:
    """`overrides_that_keep` for the params.yaml at `params_file` (nothing if it is unreadable)."""
    current = _read_current(params_file)
    if current is None:
        return KeptEdits([], [])
    return overrides_that_keep(config_dir, current, overrides)


def dvc_exp_run_refusal(argv: list[str], cwd: Path) -> str | None:
    """Why this `dvc exp run` (this process's command line, `argv`) must stop before DVC
    composes conf/ into params.yaml: the values it would drop, with the same command plus
    the `-S` that keep them, or the error the composed params.yaml would stop at. None when
    it may go on, or when `argv` is not a `dvc exp run` that composes.

    hydra_plugins/ calls it while DVC 3.67 composes (dvc/repo/experiments/queue/base.py,
    `_update_params`): the workspace's params.yaml is then still the user's own, for
    workspace, --temp and --queue runs alike, and nothing is written or queued yet. At stage
    time it is too late: the experiment's commit holds only the composed file.
    """
    from dvc.cli import parse_args
    from dvc.commands.experiments.run import CmdExperimentsRun
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

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
    stopped = "cnn-pipeline: nothing was run or queued"
    try:
        kept = kept_edits(config_dir, params_file, overrides)
        # Each value of a sweep is one experiment: refuse a bad one before any is queued.
        for sweep in get_hydra_sweeps({str(paths.PARAMS_FILE): overrides}):
            each = sweep.get(str(paths.PARAMS_FILE), [])
            check_composed(compose_params(config_dir, [*kept.overrides, *each]))
    except UserError as error:
        return f"{stopped}: the stages would refuse this params.yaml: {error}"
    if not kept.lost:
        return None
    flags = [part for override in kept.overrides for part in ("-S", override)]
    command = shlex.join(["dvc", *argv[1:], *flags])
    return (
        f"{stopped}: params.yaml holds {' '.join(kept.overrides)}, which conf/ does not, and "
        f"dvc exp run recomposes params.yaml from conf/ with only its -S. To keep them, run: "
        f"{command} (to drop them instead, first run `cnn-pipeline params --reset`)"
    )


REFUSED = 3  # the exit status of the check process when `dvc exp run` must stop


def refuse_dvc_exp_run(argv: list[str]) -> int:
    """Print `dvc_exp_run_refusal` to stderr, if any, and return REFUSED (else 0): what
    hydra_plugins/ runs, in a process of its own, so that its Hydra composition leaves DVC's
    Hydra state alone."""
    try:
        refusal = dvc_exp_run_refusal(argv, Path.cwd())
    except Exception as error:  # a broken guard must not break `dvc exp run`
        print(
            f"cnn-pipeline: cannot check params.yaml for edits: {first_line(error)}",
            file=sys.stderr,
        )
        return 0
    if refusal is None:
        return 0
    print(refusal, file=sys.stderr)
    return REFUSED
