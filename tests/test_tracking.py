"""The MLflow run the train stage records from a process of its own: what reaches the store,
and what happens when something goes wrong on either side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnn_pipeline.errors import UserError
from cnn_pipeline.tracking import LoggedKerasModel, TrackingContext, training_run

from conftest import command_environment


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
        keras_version="3",
        keras_backend="tensorflow",
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


# Records a run that logs and registers the model saved in argv[1], where every import of
# Keras or a backend fails (the recording process inherits PYTHONPATH): it must not need them.
RECORD_A_SAVED_MODEL = """
import sys
from pathlib import Path
import numpy as np
from cnn_pipeline.tracking import LoggedKerasModel, TrackingContext, training_run
folder = Path(sys.argv[1])
context = TrackingContext(folder, f"sqlite:///{folder / 'mlflow.db'}", None, None)
sample = np.load(folder / "sample.npz")
with training_run(context, "test", "simple_cnn", "digits", {}) as run:
    run.log_keras_model(LoggedKerasModel(
        path=folder / "model.keras",
        keras_version=sys.argv[2],
        keras_backend=sys.argv[3],
        sample_inputs=sample["inputs"],
        sample_outputs=sample["outputs"],
        registered_model_name="digits-cnn",
        metadata={"class_names": list("0123456789")},
        pip_requirements=["keras"],
    ))
"""


def test_the_recording_process_logs_the_model_without_importing_keras(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    import mlflow.keras

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.save(tmp_path / "model.keras")
    inputs = np.random.default_rng(2).random((2, 8, 8, 1), dtype=np.float32)
    outputs = model.predict(inputs, verbose=0)
    np.savez(tmp_path / "sample.npz", inputs=inputs, outputs=outputs)
    refused = tmp_path / "refused"
    refused.mkdir()
    for name in ("keras", "tensorflow", "jax", "torch"):
        (refused / f"{name}.py").write_text(f"raise ImportError('{name} refused by the test')\n")

    result = subprocess.run(
        [sys.executable, "-c", RECORD_A_SAVED_MODEL, str(tmp_path), keras.__version__, "jax"],
        cwd=tmp_path,
        env=command_environment(PYTHONPATH=str(refused)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    loaded = mlflow.keras.load_model("models:/digits-cnn/1")
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), outputs, rtol=1e-6)
    info = mlflow.models.get_model_info("models:/digits-cnn/1")
    assert info.flavors["keras"]["keras_backend"] == "jax"
    assert info.metadata == {"class_names": list("0123456789")}
