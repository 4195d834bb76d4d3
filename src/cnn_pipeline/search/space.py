"""The search file (conf/search/NAME.yaml): what `cnn-pipeline tune` tries and optimises,
validated before any trial trains.

Each key of `space` is a params.yaml key; a trial's values become Hydra overrides of that key
(`train.learning_rate=0.0031`), the `-S` of its `dvc exp run`. Everything here is plain data:
Optuna is imported by the modules that sample (`tune.py`) and prune (`pruning.py`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cnn_pipeline import paths
from cnn_pipeline.compose import check_composed, compose_params, flatten
from cnn_pipeline.config import load_yaml, read_params
from cnn_pipeline.errors import UserError, nearest, nearest_key_hint

SEARCH_GROUP = "search"  # conf/search/NAME.yaml

# What a search may optimise, and which way: the validation metrics that the train stage
# writes to metrics/train.json (their last epoch) and reports after every epoch, for pruning
# (training.HISTORY_COLUMNS, which tests/test_search.py checks these against).
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False


Choice = bool | int | float | str | list[Any] | None


class Categorical(_Strict):
    type: Literal["categorical"]
    choices: Annotated[list[Choice], Field(min_length=1)]


Dimension = Annotated[FloatRange | IntRange | Categorical, Field(discriminator="type")]


class PrunerConfig(_Strict):
    enabled: bool
    percentile: Annotated[float, Field(gt=0, lt=100)]
    startup_trials: Annotated[int, Field(ge=0)]
    warmup_epochs: Annotated[int, Field(ge=0)]


class SearchConfig(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"]
    trials: int
    timeout: Annotated[float, Field(gt=0)] | None
    seed: int | None
    overrides: list[str]
    pruner: PrunerConfig
    space: Annotated[dict[str, Dimension], Field(min_length=1)]


def search_names(config_dir: Path) -> list[str]:
    return sorted(path.stem for path in (config_dir / SEARCH_GROUP).glob("*.yaml"))


def load_search(config_dir: Path, name: str) -> SearchConfig:
    """Read and type-check conf/search/NAME.yaml (one line per mistake)."""
    file = config_dir / SEARCH_GROUP / f"{name}.yaml"
    shown = f"{paths.CONFIG_DIR}/{SEARCH_GROUP}/{name}.yaml"
    if not file.is_file():
        known = search_names(config_dir)
        match = nearest(name, known)
        hint = f"did you mean --search {match}? " if match else ""
        raise UserError(f"--search {name}: there is no {shown}: {hint}choose one of {known}")
    raw = load_yaml(file.read_text(encoding="utf-8"))  # 1e-4 is a number, as in params.yaml
    try:
        return SearchConfig.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"] if part not in _UNION_TAGS)
        value = problem.get("input")
        hint = ""
        if problem["type"] == "extra_forbidden":
            parent = where.rpartition(".")[0]
            known = _known_fields(parent)
            hint = f": {nearest_key_hint(where, known)}" if known else ""
            raise UserError(f"{shown}: unknown key {where}{hint}") from None
        raise UserError(f"{shown}: {where} = {value!r}: {problem['msg']}{hint}") from None


_UNION_TAGS = {"float", "int", "categorical"}


def _known_fields(parent: str) -> list[str]:
    model: type[BaseModel] = SearchConfig
    if parent == "pruner":
        model = PrunerConfig
    elif parent:
        return []
    return list(model.model_fields)


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back: 0.0031, 32, [16,32], true, null."""
    if isinstance(value, list):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value) if not isinstance(value, str) else value


def check_kept_edits(search: SearchConfig, repo_root: Path) -> None:
    """Every trial is a `dvc exp run`, which recomposes params.yaml from conf/ with the trial's
    overrides: a value edited into params.yaml by hand, that neither conf/ nor the search sets,
    would be dropped by every trial. Refused before anything is queued, naming the overrides
    that keep it (the same rule as for `dvc exp run`, cnn_pipeline.hand_edits)."""
    from cnn_pipeline.hand_edits import overrides_that_keep

    current = read_params(repo_root / paths.PARAMS_FILE)
    flat = flatten(current)
    # The searched keys are named by every trial: their params.yaml values are not lost.
    searched = [f"{key}={override_value(flat[key])}" for key in search.space if key in flat]
    config_dir = repo_root / paths.CONFIG_DIR
    kept = overrides_that_keep(config_dir, current, [*search.overrides, *searched])
    if kept.lost:
        keep = " ".join(kept.overrides)
        raise UserError(
            f"params.yaml holds {keep}, which conf/ does not, and every trial recomposes "
            f"params.yaml from conf/ with the searched values only: add {keep} to the command "
            "(or to the search file's overrides) to keep them, or run `cnn-pipeline params "
            "--reset` first to drop them"
        )


def check_search(
    search: SearchConfig, config_dir: Path, trials: int, timeout: float | None
) -> None:
    """Everything a trial could trip on, before one trains: the budget, the metric and its
    direction, every range, and every key of the space against the params conf/ composes
    (with the search's overrides), each bound and choice validated as the stages would."""
    where = f"{paths.CONFIG_DIR}/{SEARCH_GROUP}"
    if trials < 1:
        raise UserError(f"a search of {trials} trials would train nothing: give --trials 1 or more")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout {timeout:g} leaves no time: give seconds > 0, or leave it out")
    if search.metric not in METRICS:
        match = nearest(search.metric, list(METRICS))
        hint = f"did you mean {match}? " if match else ""
        raise UserError(
            f"{where}: metric {search.metric!r} is not a validation metric the train stage "
            f"writes: {hint}choose one of {', '.join(METRICS)} (the test set is never searched on)"
        )
    if METRICS[search.metric] != search.direction:
        raise UserError(
            f"{where}: direction {search.direction} would look for the worst {search.metric}: "
            f"set direction: {METRICS[search.metric]}"
        )
    for key, dimension in search.space.items():
        if isinstance(dimension, FloatRange | IntRange):
            if not dimension.low < dimension.high:
                raise UserError(
                    f"{where}: {key} has an empty range (low {dimension.low} >= high "
                    f"{dimension.high}): make low smaller than high"
                )
            if dimension.log and dimension.low <= 0:
                raise UserError(
                    f"{where}: {key} is drawn on a log scale from low {dimension.low}: "
                    "make low > 0, or set log: false"
                )
            if isinstance(dimension, FloatRange) and not math.isfinite(dimension.high):
                raise UserError(f"{where}: {key} has high {dimension.high}: give a finite bound")
    base = yaml.safe_load(compose_params(config_dir, search.overrides))
    known = flatten(base)
    for key in search.space:
        if key not in known:
            parent, _, _ = key.rpartition(".")
            siblings = sorted(
                {
                    name.removeprefix(f"{parent}.").split(".")[0]
                    for name in known
                    if not parent or name.startswith(f"{parent}.")
                }
            )
            raise UserError(
                f"{where}: space has a key {key} that params.yaml does not: "
                f"{nearest_key_hint(key, siblings)}"
            )
    # Each bound and choice, several keys per composition (one Hydra composition costs about
    # as much as the check itself); a composition that fails is retried key by key to name it.
    values = extreme_values(search)
    for index in range(max(len(tried) for tried in values.values())):
        chosen = {key: tried[index] for key, tried in values.items() if index < len(tried)}
        try:
            _check_values(config_dir, search.overrides, chosen)
        except UserError:
            for key, value in chosen.items():
                try:
                    _check_values(config_dir, search.overrides, {key: value})
                except UserError as error:
                    raise UserError(
                        f"{where}: {key} = {override_value(value)} fails: {error}"
                    ) from None
            raise


def _check_values(config_dir: Path, overrides: list[str], values: dict[str, Any]) -> None:
    settings = [f"{key}={override_value(value)}" for key, value in values.items()]
    check_composed(compose_params(config_dir, [*overrides, *settings]))


def extreme_values(search: SearchConfig) -> dict[str, list[Any]]:
    """Each key's bounds, or its choices: the values to check before the search."""
    return {
        key: list(dimension.choices)
        if isinstance(dimension, Categorical)
        else [dimension.low, dimension.high]
        for key, dimension in search.space.items()
    }


def space_description(search: SearchConfig) -> dict[str, str]:
    """One line per key, e.g. {'train.learning_rate': 'float 0.0001..0.01 log'}: the search
    space as the parent MLflow run's params, and what a resumed study must still match."""
    described = {}
    for key, dimension in search.space.items():
        if isinstance(dimension, Categorical):
            described[key] = "one of " + " ".join(override_value(c) for c in dimension.choices)
        else:
            scale = " log" if dimension.log else ""
            described[key] = f"{dimension.type} {dimension.low}..{dimension.high}{scale}"
    return described
