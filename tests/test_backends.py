"""Backend-neutral Keras: the JAX backend trains and tests the same models from the same
prepared arrays on a machine without TensorFlow (simulated by refusing its import), and the
evaluate and report stages test a TensorFlow-trained model without starting TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TrainedPipeline, command_environment, copy_trained, run_command

# Runs a cnn-pipeline stage in a Python where `import tensorflow` fails, as on a machine
# without TensorFlow, and prints whether it was imported anyway.
WITHOUT_TENSORFLOW = """
import sys
class RefuseTensorflow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("TensorFlow is not installed here (simulated)")
        return None
sys.meta_path.insert(0, RefuseTensorflow())
from cnn_pipeline.cli import main
code = main(sys.argv[1:])
assert "tensorflow" not in sys.modules
sys.exit(code)
"""


def test_jax_backend_trains_and_evaluates_without_tensorflow(tmp_path: Path) -> None:
    run_command(
        [
            "cnn-pipeline",
            "params",
            "train.epochs=3",
            "--config-dir",
            str(REPO_ROOT / "conf"),
            "--output",
            "params.yaml",
        ],
        tmp_path,
    )
    compilation_cache = tmp_path / "jax-cache"
    for stage in ("download", "preprocess"):
        run_command(["cnn-pipeline", stage], tmp_path)
    for stage in ("train", "evaluate"):
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_TENSORFLOW, stage],
            cwd=tmp_path,
            env=command_environment(
                KERAS_BACKEND="jax", CNN_PIPELINE_JAX_CACHE=str(compilation_cache)
            ),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((tmp_path / "metrics/evaluate.json").read_text())
    assert metrics["test_accuracy"] > 0.8
    # What JAX compiled is kept for the next run of the same model.
    assert len(list(compilation_cache.iterdir())) > 0
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((tmp_path / "models/mlflow_run.json").read_text())["run_id"]
    assert client.get_run(run_id).data.tags["keras_backend"] == "jax"


def without_tensorflow(stage: str, repo: Path, **environment: str) -> None:
    """Run `cnn-pipeline STAGE` in `repo` where TensorFlow cannot be imported."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, stage],
        cwd=repo,
        env=command_environment(**environment),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_evaluate_and_report_test_a_tensorflow_model_without_tensorflow(
    trained_pipeline: TrainedPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where KERAS_BACKEND is not set, evaluate and report run the model with Keras's numpy
    backend: no TensorFlow start-up, and the same scores as TensorFlow gives."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    repo = copy_trained(trained_pipeline, tmp_path / "repo")
    (repo / "reports/mistakes.png").unlink()
    for stage in ("evaluate", "report"):
        without_tensorflow(stage, repo)
    assert (repo / "reports/mistakes.png").stat().st_size > 0
    by_numpy = json.loads((repo / "metrics/evaluate.json").read_text())
    predictions = (repo / "metrics/test_predictions.csv").read_text()

    run_command(["cnn-pipeline", "evaluate"], repo, KERAS_BACKEND="tensorflow")
    by_tensorflow = json.loads((repo / "metrics/evaluate.json").read_text())
    assert (repo / "metrics/test_predictions.csv").read_text() == predictions
    assert by_numpy["test_accuracy"] == by_tensorflow["test_accuracy"]
    assert by_numpy["test_loss"] == pytest.approx(by_tensorflow["test_loss"], abs=1e-5)
