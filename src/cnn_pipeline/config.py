"""Typed views of params.yaml, one per section, validated before any heavy work.

Each stage reads only the sections it needs. A wrong value raises `UserError` with one line
that names the key, the value given and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cnn_pipeline.errors import UserError, nearest_key_hint

MISSING_VALUE = "???"  # Hydra's mark for a value the user must give


class _Section(BaseModel):
    # strict: "0.01" (a string) is not a number; forbid: a typo such as `lerning_rate` is an error.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class DataConfig(_Section):
    """The data section. Its name's own rules (which datasets exist, which keys each reads,
    whether it has its own test set) are checked by `datasets.data_config`."""

    name: Annotated[str, Field(min_length=1)]  # a module in datasets/ (discovery.py)
    mirrors: list[str]
    mirror: str | None
    path: str | None
    test_path: str | None
    image_size: Annotated[int, Field(ge=4, le=1024)] | None
    color_mode: Literal["grayscale", "rgb"] | None
    test_fraction: Fraction | None
    validation_fraction: Fraction
    split_seed: Annotated[int, Field(ge=0)]


class NetworkConfig(_Section):
    """What every network's config (the model section) holds; each module in models/
    subclasses it with its own keys (discovery.py)."""

    name: Annotated[str, Field(min_length=1)]  # the module in models/ that builds it
    min_input_size: PositiveInt | None


class AugmentConfig(_Section):
    translate: Annotated[float, Field(ge=0, lt=1)]
    rotate: Annotated[float, Field(ge=0, le=0.5)]
    zoom: Annotated[float, Field(ge=0, lt=1)]
    horizontal_flip: bool
    erase: Annotated[float, Field(ge=0, le=1)]

    @property
    def enabled(self) -> bool:
        return bool(
            self.translate or self.rotate or self.zoom or self.horizontal_flip or self.erase
        )


class TrainConfig(_Section):
    optimizer: Literal["adam", "sgd", "rmsprop"]
    learning_rate: Annotated[float, Field(gt=0)]
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: Annotated[float, Field(ge=0)]
    batch_size: PositiveInt
    epochs: PositiveInt
    seed: Annotated[int, Field(ge=0)]
    loss: Literal["categorical_crossentropy", "mean_squared_error"]
    distribute: bool
    # accelerators.DeviceSetting. The default only serves TrainConfigs built in code (tests):
    # params.yaml, composed from conf/, always names it.
    device: Literal["auto", "cpu", "gpu"] = "auto"

    def check_consistency(self) -> None:
        if self.warmup_epochs >= self.epochs:
            raise UserError(
                f"params.yaml: train.warmup_epochs = {self.warmup_epochs:g} leaves no epoch to "
                f"train at the full learning rate: make it smaller than train.epochs "
                f"({self.epochs}), e.g. a fraction such as 0.2"
            )


class EvaluateConfig(_Section):
    batch_size: PositiveInt
    confusion_normalize: bool


class ReportConfig(_Section):
    activation_images: Annotated[int, Field(ge=1, le=10)]
    mistakes_shown: PositiveInt
    calibration_bins: Annotated[int, Field(ge=2)]


class MlflowConfig(_Section):
    experiment_name: Annotated[str, Field(min_length=1)]
    registered_model_name: Annotated[str, Field(min_length=1)]


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading exponents as YAML 1.2 and people do.

    PyYAML follows YAML 1.1, where a float needs a dot: `learning_rate: 1e-3` would be the
    string "1e-3", refused as "not a valid number". DVC (ruamel) and Hydra read it as 0.001.
    """


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse params.yaml's text as its other readers (DVC, Hydra) do: `1e-3` is 0.001."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: no Python objects


def read_params(params_file: Path) -> dict[str, Any]:
    """Read params.yaml as a plain mapping, with a clear error if it is missing or not YAML."""
    try:
        text = params_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{params_file} not found: run from the repository root, or compose one with "
            "`cnn-pipeline params`"
        ) from None
    try:
        params = load_yaml(text)
    except yaml.YAMLError as error:
        raise UserError(f"{params_file} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise UserError(f"{params_file} must be a mapping of sections, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], name: str) -> Any:
    """params[name], or a UserError saying how to get a params.yaml that has it."""
    if name not in params:
        raise UserError(
            f"params.yaml has no '{name}' section: recompose it with `cnn-pipeline params`"
        )
    return params[name]


def _hand_switched_network(errors: list[Any], prefix: str, value: Any) -> str | None:
    """The one line for `model.name` changed by hand: the name is a network's, but the other
    keys are another network's. Switching a network is a group switch, which composes its
    conf/model/ file."""
    kinds = {detail["type"] for detail in errors}
    if (
        prefix != "model"
        or not isinstance(value, dict)
        or not {"missing", "extra_forbidden"} <= kinds
    ):
        return None
    name = value.get("name")
    missing = [f"model.{detail['loc'][-1]}" for detail in errors if detail["type"] == "missing"]
    return (
        f"params.yaml: model.name = {name!r}, but the other model keys are another network's "
        f"({', '.join(missing)} missing): switch networks with `cnn-pipeline params "
        f"model={name}` (keeps your other edits) or `dvc exp run -S model={name}`"
    )


def _describe(
    error: ValidationError,
    prefix: str,
    section_class: type[_Section] | None = None,
    value: Any = None,
) -> str:
    """Turn pydantic's complaints about the section `value` into one line: key, value given,
    what is allowed."""
    errors = error.errors(include_url=False)
    if switched := _hand_switched_network(errors, prefix, value):
        return switched
    # A renamed key is reported as the required key missing plus an unknown key: name the
    # unknown one, whose nearest known key is the missing one (`did you mean`).
    unknown = [detail for detail in errors if detail["type"] == "extra_forbidden"]
    detail = unknown[0] if unknown else errors[0]
    location = [str(part) for part in detail["loc"]]
    section_class = section_class or SECTION_CLASSES.get(prefix)
    key = ".".join([prefix, *location]) if location else prefix
    if detail["type"] == "extra_forbidden":
        known = list(section_class.model_fields) if section_class is not None else []
        return f"params.yaml: unknown key {key}: {nearest_key_hint(key, known)} fix or remove it"
    if detail["type"] == "missing":
        return f"params.yaml: {key} is missing: recompose params.yaml with `cnn-pipeline params`"
    given = detail.get("input")
    message = detail["msg"]
    if isinstance(given, str) and _looks_like_a_number(given):
        message += " (it is quoted, so YAML reads it as text: remove the quotes)"
    return f"params.yaml: {key} = {given!r} is invalid: {message}"


def _looks_like_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


SectionT = TypeVar("SectionT")


def _validate(adapter: TypeAdapter[SectionT], value: Any, prefix: str) -> SectionT:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise UserError(_describe(error, prefix, value=value)) from None


SectionClassT = TypeVar("SectionClassT", bound=_Section)


def validate_section(
    params: dict[str, Any], name: str, section_class: type[SectionClassT]
) -> SectionClassT:
    """params[name] as section_class, or the one-line UserError: for sections whose class is
    chosen elsewhere (a network's config, by models.model_config)."""
    value = section(params, name)
    try:
        return section_class.model_validate(value)
    except ValidationError as error:
        raise UserError(_describe(error, name, section_class, value)) from None


SECTION_CLASSES: dict[str, type[_Section]] = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "mlflow": MlflowConfig,
}


def data_config(params: dict[str, Any]) -> DataConfig:
    """The data section's keys and types only; `datasets.data_config` adds the rules of the
    dataset it names. Training reads this one (to log the section), so that it does not
    import datasets/ and depend on it."""
    return _validate(TypeAdapter(DataConfig), section(params, "data"), "data")


def augment_config(params: dict[str, Any]) -> AugmentConfig:
    return _validate(TypeAdapter(AugmentConfig), section(params, "augment"), "augment")


def train_config(params: dict[str, Any]) -> TrainConfig:
    config = _validate(TypeAdapter(TrainConfig), section(params, "train"), "train")
    config.check_consistency()
    return config


def evaluate_config(params: dict[str, Any]) -> EvaluateConfig:
    return _validate(TypeAdapter(EvaluateConfig), section(params, "evaluate"), "evaluate")


def report_config(params: dict[str, Any]) -> ReportConfig:
    return _validate(TypeAdapter(ReportConfig), section(params, "report"), "report")


def mlflow_config(params: dict[str, Any]) -> MlflowConfig:
    return _validate(TypeAdapter(MlflowConfig), section(params, "mlflow"), "mlflow")
