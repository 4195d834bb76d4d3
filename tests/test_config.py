"""Config composition and validation: conf/ and params.yaml agree; bad values fail clearly."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnn_pipeline import config, datasets, models
from cnn_pipeline.compose import compose_params
from cnn_pipeline.errors import UserError
from cnn_pipeline.stages.check import check_params

from conftest import REPO_ROOT, run_command


@pytest.fixture
def params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    return loaded


def test_committed_params_are_the_composition_of_conf_defaults() -> None:
    composed = compose_params(REPO_ROOT / "conf", [])
    assert (REPO_ROOT / "params.yaml").read_text() == composed, (
        "params.yaml is out of sync with conf/: run `make params` and commit the result"
    )


def test_group_overrides_swap_the_whole_group() -> None:
    composed = yaml.safe_load(
        compose_params(REPO_ROOT / "conf", ["data=mnist", "model=lenet5", "train.epochs=3"])
    )
    assert composed["data"]["name"] == "mnist"
    assert composed["data"]["test_fraction"] is None
    assert composed["model"]["name"] == "lenet5"
    assert "filters" not in composed["model"]
    assert composed["train"]["epochs"] == 3
    datasets.data_config(composed)
    models.model_config(composed)


def presets(group: str) -> list[str]:
    """conf/GROUP/*.yaml, without those with a value the user must give (???)."""
    return sorted(
        path.stem
        for path in (REPO_ROOT / "conf" / group).glob("*.yaml")
        if config.MISSING_VALUE not in path.read_text()
    )


@pytest.mark.parametrize("data", presets("data"))
@pytest.mark.parametrize("model", presets("model"))
def test_every_data_and_model_preset_validates(data: str, model: str) -> None:
    composed = yaml.safe_load(
        compose_params(REPO_ROOT / "conf", [f"data={data}", f"model={model}"])
    )
    datasets.data_config(composed)
    models.model_config(composed)
    config.augment_config(composed)


def test_experiment_preset_overrides_data_model_augment_and_train() -> None:
    composed = yaml.safe_load(compose_params(REPO_ROOT / "conf", ["experiment=cifar10_resnet"]))
    assert composed["data"]["name"] == "cifar10"
    assert composed["model"]["name"] == "resnet"
    assert composed["augment"]["horizontal_flip"] is True
    assert composed["train"]["batch_size"] == 128
    assert (
        composed["evaluate"] == yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["evaluate"]
    )
    assert "experiment" not in composed


@pytest.mark.parametrize(
    "experiment", sorted(path.stem for path in (REPO_ROOT / "conf/experiment").glob("*.yaml"))
)
def test_experiment_presets_validate(experiment: str) -> None:
    composed = yaml.safe_load(compose_params(REPO_ROOT / "conf", [f"experiment={experiment}"]))
    for read in (
        datasets.data_config,
        models.model_config,
        config.augment_config,
        config.train_config,
    ):
        read(composed)


def test_image_folder_needs_its_path() -> None:
    composed = yaml.safe_load(compose_params(REPO_ROOT / "conf", ["data=image_folder"]))
    with pytest.raises(UserError, match=r"data.path is required .* data.path=/data/pets"):
        datasets.data_config(composed)
    composed["data"]["path"] = "/data/pets"
    assert datasets.data_config(composed).image_size == 64


def test_image_folder_with_a_test_folder_takes_no_test_fraction() -> None:
    composed = yaml.safe_load(
        compose_params(
            REPO_ROOT / "conf", ["data=image_folder", "data.path=/a", "data.test_path=/b"]
        )
    )
    with pytest.raises(UserError, match=r"data\.test_fraction = 0\.2 is not allowed"):
        datasets.data_config(composed)


def test_image_folder_keys_are_refused_for_other_datasets(params: dict[str, Any]) -> None:
    params["data"]["image_size"] = 32
    with pytest.raises(UserError, match=r"data\.image_size = 32 is only used with data\.name = "):
        datasets.data_config(params)


def test_unknown_group_option_is_a_user_error() -> None:
    with pytest.raises(UserError, match="data=cifar"):
        compose_params(REPO_ROOT / "conf", ["data=cifar"])


def test_every_config_value_has_a_comment() -> None:
    value_line = re.compile(r"^\s*[A-Za-z_]+:\s*[^\s#]")  # a key with a value, not a section
    for path in (REPO_ROOT / "conf").rglob("*.yaml"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if value_line.match(line):
                assert "#" in line, f"{path.relative_to(REPO_ROOT)}:{number} has no comment: {line}"


def test_default_params_validate(params: dict[str, Any]) -> None:
    assert datasets.data_config(params).name == "digits"
    assert models.model_config(params).name == "simple_cnn"
    assert config.train_config(params).learning_rate > 0
    config.evaluate_config(params)
    config.mlflow_config(params)


BAD_VALUES = [
    (
        "data",
        "name",
        "cifar",
        "data.name = 'cifar' is invalid: did you mean 'cifar10'? Input should be one of "
        + ", ".join(map(repr, datasets.all_datasets())),
    ),
    (
        "model",
        "name",
        "vgg",
        "model.name = 'vgg' is invalid: Input should be one of "
        + ", ".join(map(repr, models.networks()))
        + " (a module in src/cnn_pipeline/models/ adds one",
    ),
    (
        "train",
        "learning_rate",
        0,
        "train.learning_rate = 0 is invalid: Input should be greater than 0",
    ),
    ("train", "learning_rate", -0.01, "train.learning_rate = -0.01 is invalid"),
    ("train", "epochs", 0, "train.epochs = 0 is invalid: Input should be greater than 0"),
    (
        "train",
        "batch_size",
        -32,
        "train.batch_size = -32 is invalid: Input should be greater than 0",
    ),
    (
        "train",
        "learning_rate",
        "0.01",
        "train.learning_rate = '0.01' is invalid: Input should be a valid number",
    ),
    ("train", "epochs", "ten", "train.epochs = 'ten' is invalid: Input should be a valid integer"),
    (
        "train",
        "lerning_rate",
        0.01,
        "unknown key train.lerning_rate: did you mean train.learning_rate? fix or remove it",
    ),
    (
        "train",
        "optimizer",
        "adamw",
        "train.optimizer = 'adamw' is invalid: Input should be 'adam', 'sgd' or 'rmsprop'",
    ),
    ("train", "loss", "hinge", "train.loss = 'hinge' is invalid"),
    (
        "train",
        "device",
        "cuda",
        "train.device = 'cuda' is invalid: Input should be 'auto', 'cpu' or 'gpu'",
    ),
    (
        "model",
        "dropout_rate",
        1.5,
        "model.dropout_rate = 1.5 is invalid: Input should be less than 1",
    ),
    (
        "data",
        "test_fraction",
        None,
        "data.test_fraction = null is not allowed for data.name = 'digits'",
    ),
    ("evaluate", "batch_size", 0, "evaluate.batch_size = 0 is invalid"),
    (
        "augment",
        "rotate",
        0.9,
        "augment.rotate = 0.9 is invalid: Input should be less than or equal",
    ),
    ("report", "calibration_bins", 1, "report.calibration_bins = 1 is invalid"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD_VALUES)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(
    params: dict[str, Any], section: str, key: str, value: object, message: str
) -> None:
    bad = copy.deepcopy(params)
    bad[section][key] = value
    readers = {
        "data": datasets.data_config,
        "model": models.model_config,
        "train": config.train_config,
        "evaluate": config.evaluate_config,
        "augment": config.augment_config,
        "report": config.report_config,
    }
    with pytest.raises(UserError) as raised:
        readers[section](bad)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("stage", "section", "key", "value"),
    [
        ("train", "train", "learning_rate", -1.0),
        ("train", "model", "name", "vgg16"),
        ("preprocess", "data", "validation_fraction", 0),
        ("download", "data", "name", "imagenet"),
        ("evaluate", "evaluate", "batch_sise", 64),
    ],
)
def test_stage_rejects_bad_params_in_one_line_and_leaves_outputs_untouched(
    tmp_path: Path, params: dict[str, Any], stage: str, section: str, key: str, value: object
) -> None:
    bad = copy.deepcopy(params)
    bad[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    earlier_output = tmp_path / "data" / "prepared" / "dataset.json"
    earlier_output.parent.mkdir(parents=True)
    earlier_output.write_text("earlier")

    result = run_command(["cnn-pipeline", stage], tmp_path, check=False)

    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert error_lines == [error_lines[0]], result.stderr
    assert f"{section}.{key}" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert earlier_output.read_text() == "earlier"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "params.yaml"]


def test_missing_params_file_says_how_to_make_one(tmp_path: Path) -> None:
    result = run_command(["cnn-pipeline", "train"], tmp_path, check=False)
    assert result.returncode == 2
    assert "params.yaml not found" in result.stderr
    assert "cnn-pipeline params" in result.stderr


def test_warmup_must_leave_epochs_at_the_full_learning_rate() -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["train"].update(epochs=2, warmup_epochs=2)
    with pytest.raises(UserError, match=r"train.warmup_epochs = 2 leaves no epoch .* smaller"):
        config.train_config(params)
    params["train"]["warmup_epochs"] = 0.5
    assert config.train_config(params).warmup_epochs == 0.5


def test_check_params_validates_every_section_and_knows_them_all(params: dict[str, Any]) -> None:
    check_params(params)
    params["trian"] = params.pop("train")
    with pytest.raises(UserError, match=r"unknown section trian: did you mean train\?"):
        check_params(params)


def test_values_are_read_as_people_write_them(tmp_path: Path) -> None:
    """`1e-3` is 0.001, as DVC and Hydra read it (PyYAML's YAML 1.1 would read text); a
    quoted number stays text and is refused with what to do."""
    text = (REPO_ROOT / "params.yaml").read_text().replace("learning_rate: 0.002", "")
    (tmp_path / "params.yaml").write_text(
        text.replace("train:\n", "train:\n  learning_rate: 1e-3\n")
    )
    params = config.read_params(tmp_path / "params.yaml")
    assert config.train_config(params).learning_rate == 0.001
    assert config.load_yaml("a: -2E+4\nb: '1e-3'\nc: e5\nd: 1_000") == {
        "a": -20000.0,
        "b": "1e-3",
        "c": "e5",
        "d": 1000,
    }
    params["train"]["learning_rate"] = "0.01"
    with pytest.raises(
        UserError, match="it is quoted, so YAML reads it as text: remove the quotes"
    ):
        config.train_config(params)


def test_a_renamed_required_key_is_named_with_the_key_it_replaced(params: dict[str, Any]) -> None:
    params["train"]["lerning_rate"] = params["train"].pop("learning_rate")
    with pytest.raises(UserError) as raised:
        config.train_config(params)
    assert str(raised.value) == (
        "params.yaml: unknown key train.lerning_rate: did you mean train.learning_rate? "
        "fix or remove it"
    )


def test_a_network_switched_by_hand_is_answered_with_the_command_that_switches_it(
    params: dict[str, Any],
) -> None:
    params["model"]["name"] = "lenet5"
    with pytest.raises(UserError) as raised:
        models.model_config(params)
    assert str(raised.value) == (
        "params.yaml: model.name = 'lenet5', but the other model keys are another network's "
        "(model.activation, model.pooling missing): switch networks with `cnn-pipeline params "
        "model=lenet5` (keeps your other edits) or `dvc exp run -S model=lenet5`"
    )
