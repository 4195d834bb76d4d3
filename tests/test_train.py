"""The pure training core (`training.train_model`): reproducibility, the per-epoch history
and the learning-rate schedule; the train stage's pinned serving requirements."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnn_pipeline import training
from cnn_pipeline.config import AugmentConfig, TrainConfig
from cnn_pipeline.models.simple_cnn import SimpleCnnConfig
from cnn_pipeline.prepared import DatasetInfo, Split, load_info, load_split
from cnn_pipeline.stages import download, evaluate, preprocess, train
from cnn_pipeline.training import TrainingResult, train_model

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
NO_AUGMENTATION = AugmentConfig(translate=0, rotate=0, zoom=0, horizontal_flip=False, erase=0)
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
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Split, Split, Split, DatasetInfo]:
    workdir = tmp_path_factory.mktemp("prepared")
    data = data_config("digits")
    download.run(data, workdir / "data/raw")
    preprocess.run(data, workdir / "data/raw", workdir / "data/prepared")
    prepared_dir = workdir / "data/prepared"
    splits = (load_split(prepared_dir, name) for name in ("train", "validation", "test"))
    return (*splits, load_info(prepared_dir))  # type: ignore[return-value]


def train_and_test(
    prepared: tuple[Split, Split, Split, DatasetInfo], train_config: TrainConfig
) -> tuple[TrainingResult, dict[str, object]]:
    """The pure training core, then the evaluate stage's own computation of test metrics."""
    train, validation, test, info = prepared
    result = train_model(train, validation, info, MODEL, NO_AUGMENTATION, train_config)
    evaluation = evaluate.evaluate_model(result.model, test.images, test.labels, info, 128)
    return result, evaluation.metrics


def test_same_params_and_seed_give_the_same_model_and_test_metrics(
    prepared: tuple[Split, Split, Split, DatasetInfo],
) -> None:
    first, first_metrics = train_and_test(prepared, TRAIN)
    second, second_metrics = train_and_test(prepared, TRAIN)
    assert first_metrics == second_metrics
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    _, other_seed = train_and_test(prepared, TRAIN.model_copy(update={"seed": 8}))
    assert other_seed["test_loss"] != first_metrics["test_loss"]


def test_history_has_one_row_per_epoch_with_the_learning_rate_as_scheduled(
    prepared: tuple[Split, Split, Split, DatasetInfo],
) -> None:
    result, _ = train_and_test(prepared, TRAIN.model_copy(update={"epochs": 3}))
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert list(result.history[0]) == list(training.HISTORY_COLUMNS)
    schedule = training.learning_rate_schedule(
        TRAIN.model_copy(update={"epochs": 3}), len(prepared[0].labels)
    )
    steps = training.steps_per_epoch(len(prepared[0].labels), TRAIN.batch_size)
    expected = [float(schedule(steps * epoch)) for epoch in (1, 2, 3)]  # type: ignore[operator]
    assert [row["learning_rate"] for row in result.history] == pytest.approx(expected, abs=1e-7)
    assert result.history[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-9)  # cosine's end


def test_mean_squared_error_loss_trains_on_the_softmax_output(
    prepared: tuple[Split, Split, Split, DatasetInfo],
) -> None:
    _, metrics = train_and_test(prepared, TRAIN.model_copy(update={"loss": "mean_squared_error"}))
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
    schedule = training.learning_rate_schedule(config, training_images=10 * config.batch_size)
    assert callable(schedule)
    rates = [float(schedule(step)) for step in (0, 5, 10, 20)]
    assert rates == pytest.approx(expected, abs=1e-7)


def test_constant_learning_rate_without_warmup_is_a_plain_number() -> None:
    config = TRAIN.model_copy(update={"lr_schedule": "constant"})
    assert training.learning_rate_schedule(config, 640) == 0.003
