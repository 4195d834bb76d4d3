"""Compose conf/ into params.yaml the way `dvc exp run` does, and check the result first.

`cnn-pipeline params` and the `dvc exp run` guard in hydra_plugins/ both use this module:
each override is checked against conf/ (an unknown group option lists the options, a
misspelt key names the nearest one) and the composition is validated by the stages' own
validators (the check stage's). hand_edits.py names the values of params.yaml that a
composition would throw away without being asked to.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnn_pipeline import paths
from cnn_pipeline.errors import UserError, first_line, nearest, nearest_key_hint

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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}; lists are values, not branches."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
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
        known = flatten(yaml.safe_load(_compose(config_dir, group_overrides)))
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
        hint = nearest_key_hint(override.key, siblings)
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
                match = nearest(override.value, options)
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
    from cnn_pipeline.stages.check import check_params

    check_params(params)
    return params


def committed_params(repo_root: Path, commit: str) -> dict[str, Any] | None:
    """params.yaml as `commit` has it (`git show`), parsed; None where git, the commit or the
    file is missing, or the file is not a YAML mapping."""
    try:
        text = subprocess.run(
            ["git", "show", f"{commit}:{paths.PARAMS_FILE.as_posix()}"],
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        params = yaml.safe_load(text)
    except (OSError, subprocess.CalledProcessError, yaml.YAMLError):
        return None
    return params if isinstance(params, dict) else None


def default_params(config_dir: Path) -> dict[str, Any] | None:
    """conf/'s default composition, parsed; None where conf/ is missing or does not compose."""
    if not config_dir.is_dir():
        return None
    try:
        params: dict[str, Any] = yaml.safe_load(compose_params(config_dir, []))
    except UserError:
        return None
    return params


# Values that do not change what is trained: where the data was fetched from, and the MLflow
# names the run is filed under.
NOT_DESCRIBING = ("data.mirror", "mlflow.")


def describe_changes(
    params: dict[str, Any], baseline: dict[str, Any], config_dir: Path
) -> dict[str, str]:
    """What `params` changes from `baseline` (both as params.yaml holds them), written as a
    person sets it with `-S`: a section switched to another file of its config group as
    `model=lenet5`, followed by that section's keys that differ from lenet5.yaml itself;
    every other value as `train.learning_rate=0.003`. Returns {"model": "lenet5",
    "train.learning_rate": "0.003"}: what names and tags a run."""
    changes: dict[str, str] = {}
    switched = _switched_groups(params, baseline, config_dir)
    for section, value in params.items():
        reference = baseline.get(section)
        if section in switched:
            option, reference = switched[section]
            changes[section] = option
        if value == reference:
            continue
        reference_flat = flatten(reference, section) if isinstance(reference, dict) else {}
        for key, item in flatten(value, section).items():
            if reference_flat.get(key, reference) != item and not key.startswith(NOT_DESCRIBING):
                changes[key] = str(item)
    return changes


def _switched_groups(
    params: dict[str, Any], baseline: dict[str, Any], config_dir: Path
) -> dict[str, tuple[str, dict[str, Any]]]:
    """{group: (option, that option's section)} for each config group (conf/model/, conf/data/)
    whose section in `params` is closest to another file of the group than the baseline's is."""
    if not config_dir.is_dir():
        return {}
    groups = [
        path.name
        for path in sorted(config_dir.iterdir())
        if path.is_dir() and path.name != EXPERIMENT_GROUP
    ]
    changed = [
        group
        for group in groups
        if isinstance(params.get(group), dict) and params.get(group) != baseline.get(group)
    ]
    if not changed:
        return {}
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    switched: dict[str, tuple[str, dict[str, Any]]] = {}
    with initialize_config_dir(str(config_dir.resolve()), version_base=None):
        for group in changed:
            sections: dict[str, dict[str, Any]] = {}
            for option in _group_options(config_dir, group):
                try:
                    composed = compose(config_name=CONFIG_NAME, overrides=[f"{group}={option}"])
                except (HydraException, OmegaConfBaseException):
                    continue
                tree = OmegaConf.to_container(composed, resolve=True)
                section = tree.get(group) if isinstance(tree, dict) else None
                if isinstance(section, dict):
                    sections[option] = {str(key): item for key, item in section.items()}
            if not sections:
                continue
            used = _closest(params[group], sections)
            if used != _closest(baseline.get(group), sections):
                switched[group] = (used, sections[used])
    return switched


def _closest(section: Any, options: dict[str, dict[str, Any]]) -> str:
    """The option whose section has the fewest values unlike `section`'s (the first on ties)."""
    flat = flatten(section) if isinstance(section, dict) else {}

    def differences(option: str) -> int:
        candidate = flatten(options[option])
        return sum(flat.get(key) != candidate.get(key) for key in {*flat, *candidate})

    return min(options, key=differences)
