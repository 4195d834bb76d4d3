"""Typed views of params.yaml, one per section, validated before any heavy work.

Each stage reads only the sections it needs. A wrong value raises `UserError` with one line
that names the key, the value given and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cnn_pipeline.errors import UserError, nearest_key_hint

DatasetName = Literal["digits", "mnist", "fashion_mnist", "cifar10", "image_folder"]
DATASETS_WITH_OWN_TEST_SET: frozenset[str] = frozenset({"mnist", "fashion_mnist", "cifar10"})
IMAGE_FOLDER_KEYS = ("path", "image_size", "color_mode")
MISSING_VALUE = "???"  # Hydra's mark for a value the user must give


class _Section(BaseModel):
    # strict: "0.01" (a string) is not a number; forbid: a typo such as `lerning_rate` is an error.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class DataConfig(_Section):
    name: DatasetName
    mirrors: list[str]
    mirror: str | None
    path: str | None
    test_path: str | None
    image_size: Annotated[int, Field(ge=4, le=1024)] | None
    color_mode: Literal["grayscale", "rgb"] | None
    test_fraction: Fraction | None
    validation_fraction: Fraction
    split_seed: Annotated[int, Field(ge=0)]

    def check_consistency(self) -> None:
        """Rules that tie keys to the dataset chosen, checked after each key's own type."""
        if self.name == "image_folder":
            if self.path == MISSING_VALUE:
                raise UserError(
                    "params.yaml: data.path is required for data.name = "
                    "'image_folder': set it to your folder, e.g. "
                    "`-S data.path=/data/pets` or `cnn-pipeline params "
                    "data=image_folder data.path=/data/pets`"
                )
            for key in IMAGE_FOLDER_KEYS:
                if getattr(self, key) is None:
                    raise UserError(
                        f"params.yaml: data.{key} = null is not allowed for "
                        "data.name = 'image_folder': set it (see conf/data/"
                        "image_folder.yaml)"
                    )
        else:
            for key in (*IMAGE_FOLDER_KEYS, "test_path"):
                if getattr(self, key) is not None:
                    raise UserError(
                        f"params.yaml: data.{key} = {getattr(self, key)!r} is only "
                        f"used with data.name = 'image_folder', not {self.name!r}: "
                        "set it to null"
                    )
        has_own_test_set = self.name in DATASETS_WITH_OWN_TEST_SET or self.test_path is not None
        if has_own_test_set and self.test_fraction is not None:
            raise UserError(
                f"params.yaml: data.test_fraction = {self.test_fraction!r} is not allowed for "
                f"data.name = {self.name!r} with its own test set: set it to null"
            )
        if not has_own_test_set and self.test_fraction is None:
            raise UserError(
                f"params.yaml: data.test_fraction = null is not allowed for data.name = "
                f"{self.name!r}, which has no separate test set: give a fraction between 0 and 1"
            )


class SimpleCnnConfig(_Section):
    name: Literal["simple_cnn"]
    min_input_size: PositiveInt | None
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    convs_per_block: Annotated[int, Field(ge=1, le=26)]
    kernel_size: PositiveInt
    padding: Literal["valid", "same"]
    batch_norm: bool
    dense_units: PositiveInt | None
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


class FastCnnConfig(_Section):
    name: Literal["fast_cnn"]
    min_input_size: PositiveInt | None
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    stem_kernel_size: PositiveInt
    dense_units: PositiveInt | None
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


class LeNet5Config(_Section):
    name: Literal["lenet5"]
    min_input_size: PositiveInt | None
    activation: Literal["relu", "tanh"]
    pooling: Literal["max", "average"]
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


class ResNetConfig(_Section):
    name: Literal["resnet"]
    min_input_size: PositiveInt | None
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    blocks_per_stage: PositiveInt
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


AnyModelConfig = SimpleCnnConfig | FastCnnConfig | LeNet5Config | ResNetConfig
ModelConfig = Annotated[AnyModelConfig, Field(discriminator="name")]
MODEL_CLASSES: dict[str, type[_Section]] = {
    member.model_fields["name"].annotation.__args__[0]: member  # type: ignore[union-attr]
    for member in (SimpleCnnConfig, FastCnnConfig, LeNet5Config, ResNetConfig)
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CLASSES)


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
        params = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{params_file} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise UserError(f"{params_file} must be a mapping of sections, got {type(params).__name__}")
    return params


def _section(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise UserError(
            f"params.yaml has no '{name}' section: recompose it with `cnn-pipeline params`"
        )
    return params[name]


def _describe(error: ValidationError, prefix: str) -> str:
    """Turn pydantic's first complaint into one line: key, value given, what is allowed."""
    detail = error.errors(include_url=False)[0]
    location = [str(part) for part in detail["loc"]]
    section_class = SECTION_CLASSES.get(prefix)
    # A tagged union adds the tag ("simple_cnn") to the location; the user never wrote it.
    if prefix == "model" and location and location[0] in MODEL_NAMES:
        section_class = MODEL_CLASSES[location[0]]
        location = location[1:]
    key = ".".join([prefix, *location]) if location else prefix
    if detail["type"] == "extra_forbidden":
        known = list(section_class.model_fields) if section_class is not None else []
        return f"params.yaml: unknown key {key}: {nearest_key_hint(key, known)} fix or remove it"
    if detail["type"] == "missing":
        return f"params.yaml: {key} is missing: recompose params.yaml with `cnn-pipeline params`"
    given = detail.get("input")
    message = detail["msg"]
    if detail["type"] == "union_tag_not_found":
        return f"params.yaml: {prefix}.name is missing: name one of the files in conf/{prefix}/"
    if detail["type"] == "union_tag_invalid":
        key, given = f"{prefix}.name", detail["ctx"]["tag"]
        message = f"Input should be one of {detail['ctx']['expected_tags']}"
    return f"params.yaml: {key} = {given!r} is invalid: {message}"


SectionT = TypeVar("SectionT")


def _validate(adapter: TypeAdapter[SectionT], value: Any, prefix: str) -> SectionT:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise UserError(_describe(error, prefix)) from None


SECTION_CLASSES: dict[str, type[_Section]] = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "mlflow": MlflowConfig,
}


def data_config(params: dict[str, Any]) -> DataConfig:
    config = _validate(TypeAdapter(DataConfig), _section(params, "data"), "data")
    config.check_consistency()
    return config


def model_config(params: dict[str, Any]) -> AnyModelConfig:
    adapter: TypeAdapter[AnyModelConfig] = TypeAdapter(ModelConfig)
    return _validate(adapter, _section(params, "model"), "model")


def augment_config(params: dict[str, Any]) -> AugmentConfig:
    return _validate(TypeAdapter(AugmentConfig), _section(params, "augment"), "augment")


def train_config(params: dict[str, Any]) -> TrainConfig:
    config = _validate(TypeAdapter(TrainConfig), _section(params, "train"), "train")
    config.check_consistency()
    return config


def evaluate_config(params: dict[str, Any]) -> EvaluateConfig:
    return _validate(TypeAdapter(EvaluateConfig), _section(params, "evaluate"), "evaluate")


def report_config(params: dict[str, Any]) -> ReportConfig:
    return _validate(TypeAdapter(ReportConfig), _section(params, "report"), "report")


def mlflow_config(params: dict[str, Any]) -> MlflowConfig:
    return _validate(TypeAdapter(MlflowConfig), _section(params, "mlflow"), "mlflow")
