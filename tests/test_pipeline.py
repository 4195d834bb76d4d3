"""End to end: `dvc repro` and `dvc exp run` in a fresh copy of the repository.

One module-scoped copy runs the real pipeline (2 epochs) once; the tests after the first
check what a user sees next: the MLflow run, a no-op repro, and which stages re-run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import copy_repository, run_command

pytestmark = pytest.mark.e2e


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def edit_params(repo: Path, section: str, key: str, value: object) -> None:
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params[section][key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repository(tmp_path_factory.mktemp("pipeline"))
    run_command(["cnn-pipeline", "params", "train.epochs=2"], repo)
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) == ["download", "preprocess", "train", "evaluate"]
    return repo


def mlflow_client(repo: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def test_repro_writes_model_metrics_and_plots(repo: Path) -> None:
    import keras

    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert metrics["test_images"] == 359
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    per_class = json.loads((repo / "metrics/per_class.json").read_text())
    assert set(per_class) == set("0123456789")
    assert set(per_class["7"]) == {"precision", "recall", "f1-score"}
    history = (repo / "metrics/train_history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert len(history) == 3  # header and 2 epochs
    assert sorted(path.name for path in (repo / "models/checkpoints").iterdir()) == [
        "epoch_001.keras",
        "epoch_002.keras",
    ]
    assert (repo / "metrics/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    predictions = (repo / "metrics/test_predictions.csv").read_text().splitlines()
    assert predictions[0] == "actual,predicted" and len(predictions) == 360
    model = keras.saving.load_model(repo / "models/model.keras")
    assert model.output_shape == (None, 10)


def test_mlflow_run_holds_params_metrics_model_and_tags(repo: Path) -> None:
    client = mlflow_client(repo)
    experiment = client.get_experiment_by_name("cnn-pipeline")
    assert experiment.artifact_location == (repo / "mlartifacts").as_uri()
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["model.name"] == "simple_cnn"
    assert run.data.params["data.name"] == "digits"
    assert run.data.tags["dataset"] == "digits"
    assert run.data.tags["device"] == "CPU"
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    test_metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(test_metrics["test_accuracy"])
    assert "test_f1_class_7" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1, 2]
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in artifacts
    versions = client.search_model_versions("name='cnn-pipeline'")
    assert [version.run_id for version in versions] == [run_id]


def test_second_repro_is_a_no_op(repo: Path) -> None:
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) == []
    assert "up to date" in result.stdout


def test_evaluation_only_change_does_not_retrain(repo: Path) -> None:
    edit_params(repo, "evaluate", "batch_size", 100)
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) == ["evaluate"]


def test_exp_run_composes_conf_and_reruns_only_training(repo: Path) -> None:
    result = run_command(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "faster-lr",
            "-S",
            "train.epochs=1",
            "-S",
            "train.learning_rate=0.005",
        ],
        repo,
    )
    assert running_stages(result.stdout) == ["train", "evaluate"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == 0.005
    assert params["evaluate"]["batch_size"] == 512  # recomposed from conf/, the hand edit is gone

    client = mlflow_client(repo)
    experiment = client.get_experiment_by_name("cnn-pipeline")
    runs = client.search_runs([experiment.experiment_id], "tags.`dvc.experiment` = 'faster-lr'")
    assert len(runs) == 1
    assert runs[0].data.params["train.learning_rate"] == "0.005"
    assert "test_accuracy" in runs[0].data.metrics
