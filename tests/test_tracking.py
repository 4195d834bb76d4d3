"""The MLflow run the train stage records from a process of its own: what reaches the store,
and what happens when something goes wrong on either side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnn_pipeline.errors import UserError
from cnn_pipeline.tracking import LoggedKerasModel, TrackingContext, training_run


def context(tmp_path: Path) -> TrackingContext:
    return TrackingContext(
        repo_root=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        dvc_experiment="brisk-lark",
        baseline_commit=None,
    )


def stored_run(tmp_path: Path, run_id: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)


def test_requests_reach_the_store_in_order_and_the_run_ends_finished(tmp_path: Path) -> None:
    with training_run(
        context(tmp_path), "test", "simple_cnn", "digits", {"train": {"seed": 3}}
    ) as run:
        for epoch in range(1, 4):
            run.log_metrics({"loss": 1.0 / epoch}, step=epoch)
        run.set_tags({"device": "CPU"})
    run_id, _ = run.ids
    stored = stored_run(tmp_path, run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "brisk-lark"
    assert stored.data.params == {"train.seed": "3"}
    assert stored.data.tags["dvc.experiment"] == "brisk-lark"
    assert stored.data.tags["device"] == "CPU"
    import mlflow

    history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        run_id, "loss"
    )
    assert [(metric.step, metric.value) for metric in history] == [
        (1, 1.0),
        (2, 0.5),
        (3, pytest.approx(1 / 3)),
    ]


def test_a_request_that_fails_is_raised_with_the_store_and_the_run_ends_failed(
    tmp_path: Path,
) -> None:
    missing = LoggedKerasModel(
        path=tmp_path / "no_such_model.keras",
        sample_inputs=np.zeros((1, 8, 8, 1), dtype=np.float32),
        sample_outputs=np.full((1, 10), 0.1, dtype=np.float32),
        registered_model_name="m",
        metadata={},
        pip_requirements=["keras"],
    )
    with (
        pytest.raises(UserError, match=r"MLflow could not log keras model in sqlite:///"),
        training_run(context(tmp_path), "test", "simple_cnn", "digits", {}) as run,
    ):
        run.log_keras_model(missing)
    assert stored_run(tmp_path, run.ids[0]).info.status == "FAILED"


def test_an_error_in_training_ends_the_run_failed(tmp_path: Path) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        training_run(context(tmp_path), "test", "simple_cnn", "digits", {}) as run,
    ):
        run.log_metrics({"loss": 2.0}, step=1)
        raise KeyboardInterrupt
    stored = stored_run(tmp_path, run.ids[0])
    assert stored.info.status == "FAILED"
    assert stored.data.metrics == {"loss": 2.0}
