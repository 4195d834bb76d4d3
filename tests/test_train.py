"""Training and evaluation in-process: reproducibility and the records they leave."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from cnn_pipeline.config import (
    AugmentConfig,
    EvaluateConfig,
    MlflowConfig,
    SimpleCnnConfig,
    TrainConfig,
)
from cnn_pipeline.errors import UserError
from cnn_pipeline.stages import download, evaluate, preprocess, train
from cnn_pipeline.tracking import TrackingContext, training_run

from conftest import data_config

MODEL = SimpleCnnConfig(
    name="simple_cnn",
    min_input_size=None,
    filters=[8, 16],
    convs_per_block=1,
    kernel_size=3,
    padding="same",
    batch_norm=True,
    dense_units=None,
    dropout_rate=0.5,
)
NO_AUGMENTATION = AugmentConfig(translate=0, rotate=0, zoom=0, horizontal_flip=False)
TRAIN = TrainConfig(
    optimizer="adam",
    learning_rate=0.003,
    lr_schedule="cosine",
    warmup_epochs=0,
    batch_size=64,
    epochs=2,
    seed=7,
    loss="categorical_crossentropy",
    distribute=True,
)


@pytest.fixture(scope="module")
def prepared_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("prepared")
    data = data_config("digits")
    download.run(data, workdir / "data/raw")
    preprocess.run(data, workdir / "data/raw", workdir / "data/prepared")
    return workdir


def train_and_evaluate(source: Path, workdir: Path, train_config: TrainConfig) -> dict[str, object]:
    shutil.copytree(source / "data", workdir / "data")
    context = TrackingContext(
        repo_root=workdir,
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        dvc_experiment=None,
        baseline_commit=None,
    )
    params = {"train": train_config.model_dump()}
    train.run(
        MODEL,
        NO_AUGMENTATION,
        train_config,
        MlflowConfig(experiment_name="test", registered_model_name="m"),
        training_run(context, "test", MODEL.name, "digits", params),
        workdir,
    )
    evaluation = evaluate.run(
        EvaluateConfig(batch_size=128, confusion_normalize=True), context, workdir
    )
    return evaluation.metrics


def test_same_params_and_seed_give_the_same_test_metrics(
    prepared_workdir: Path, tmp_path: Path
) -> None:
    first = train_and_evaluate(prepared_workdir, tmp_path / "first", TRAIN)
    second = train_and_evaluate(prepared_workdir, tmp_path / "second", TRAIN)
    assert first == second
    other_seed = train_and_evaluate(
        prepared_workdir, tmp_path / "other", TRAIN.model_copy(update={"seed": 8})
    )
    assert other_seed["test_loss"] != first["test_loss"]


def test_mean_squared_error_loss_trains_on_the_softmax_output(
    prepared_workdir: Path, tmp_path: Path
) -> None:
    metrics = train_and_evaluate(
        prepared_workdir, tmp_path, TRAIN.model_copy(update={"loss": "mean_squared_error"})
    )
    # MSE between a softmax and a one-hot target is at most 2/num_classes = 0.2.
    assert 0 < float(metrics["test_loss"]) < 0.2  # type: ignore[arg-type]


def test_logged_model_pins_keras_numpy_and_the_backend() -> None:
    import keras

    requirements = train.serving_requirements()
    assert requirements[0] == f"keras=={keras.__version__}"
    assert any(line.startswith("numpy==") for line in requirements)
    assert any(line.startswith(f"{keras.config.backend()}==") for line in requirements)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    # learning rate at steps 0, 5 (end of warmup), 10 and 20 (the last) of 2 epochs x 10 steps
    [
        ("cosine", [0.0, 0.01, 0.01 * (1 + math.cos(math.pi / 3)) / 2, 0.0]),
        ("constant", [0, 0.01, 0.01, 0.01]),
    ],
)
def test_learning_rate_warms_up_then_follows_the_schedule(
    schedule: str, expected: list[float]
) -> None:
    config = TRAIN.model_copy(
        update={"lr_schedule": schedule, "learning_rate": 0.01, "warmup_epochs": 0.5}
    )
    schedule = train.learning_rate_schedule(config, training_images=10 * config.batch_size)
    assert callable(schedule)
    rates = [float(schedule(step)) for step in (0, 5, 10, 20)]
    assert rates == pytest.approx(expected, abs=1e-7)


def test_constant_learning_rate_without_warmup_is_a_plain_number() -> None:
    config = TRAIN.model_copy(update={"lr_schedule": "constant"})
    assert train.learning_rate_schedule(config, 640) == 0.003


def test_a_broken_tracking_store_stops_training_early_and_records_no_run(
    prepared_workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(prepared_workdir / "data", tmp_path / "data")
    not_a_folder = tmp_path / "not_a_folder"
    not_a_folder.write_text("")
    context = TrackingContext(
        repo_root=tmp_path,
        tracking_uri=f"sqlite:///{not_a_folder / 'mlflow.db'}",
        dvc_experiment=None,
        baseline_commit=None,
    )
    epochs = 60
    with pytest.raises(
        UserError, match=r"MLflow cannot record the run in sqlite:///.*not_a_folder"
    ):
        train.run(
            MODEL,
            NO_AUGMENTATION,
            TRAIN.model_copy(update={"epochs": epochs}),
            MlflowConfig(experiment_name="test", registered_model_name="m"),
            training_run(context, "test", MODEL.name, "digits", {}),
            tmp_path,
        )
    assert capsys.readouterr().out.count("Epoch ") < epochs
    assert not (tmp_path / "models/mlflow_run.json").exists()
    assert not (tmp_path / "models/model.keras").exists()
