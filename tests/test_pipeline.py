"""End to end: `dvc repro` and `dvc exp run` in a fresh copy of the repository.

One module-scoped copy runs the real pipeline (2 epochs) once; the tests after the first
check what a user sees next: the MLflow run, a no-op repro, and which stages re-run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import TrainedPipeline, command_environment, run_command

pytestmark = pytest.mark.e2e

STAGES = ["download", "preprocess", "train", "evaluate", "report"]


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def edit_params(repo: Path, section: str, key: str, value: object) -> None:
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params[section][key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(trained_pipeline: TrainedPipeline) -> Path:
    assert running_stages(trained_pipeline.repro_output) == [
        "check",
        "download",
        "preprocess",
        "train",
        "evaluate",
        "report",
    ]
    return trained_pipeline.repo


def mlflow_client(repo: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def test_repro_writes_model_metrics_and_plots(repo: Path) -> None:
    import keras

    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert metrics["test_images"] == 359
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    per_class = (repo / "metrics/per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,precision,recall,f1"
    assert [row.split(",")[0] for row in per_class[1:]] == list("0123456789")
    history = (repo / "metrics/train_history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate"
    assert len(history) == 3  # header and 2 epochs
    assert sorted(path.name for path in (repo / "models/checkpoints").iterdir()) == [
        "epoch_001.keras",
        "epoch_002.keras",
    ]
    for figure in (
        "confusion_matrix",
        "training_curves",
        "first_layer_filters",
        "activation_maps",
        "mistakes",
        "calibration",
    ):
        assert (repo / f"reports/{figure}.png").read_bytes()[:4] == b"\x89PNG", figure
    calibration = json.loads((repo / "metrics/calibration.json").read_text())
    assert 0 <= calibration["test_expected_calibration_error"] <= 1
    layers = json.loads((repo / "reports/receptive_fields.json").read_text())["layers"]
    assert [layer["layer"] for layer in layers] == ["conv1", "pool1", "conv2", "pool2"]
    predictions = (repo / "metrics/test_predictions.csv").read_text().splitlines()
    assert predictions[0] == "actual,predicted" and len(predictions) == 360
    model = keras.saving.load_model(repo / "models/model.keras")
    assert model.output_shape == (None, 10)


def test_repro_prints_no_warnings(trained_pipeline: TrainedPipeline) -> None:
    """Python warnings and MLflow's warnings read as trouble in a run that went well: a
    normal `dvc repro` prints none (docs/speed.md, "What a stage prints")."""
    warnings = [
        line
        for line in trained_pipeline.repro_errors.splitlines()
        if re.search(r"Warning:|WARNING mlflow|Add type hints", line)
    ]
    assert warnings == []


def test_evaluate_and_report_print_no_tpu_line(trained_pipeline: TrainedPipeline) -> None:
    """Keras's numpy backend (digits' small test set) runs convolutions on JAX, whose search
    for a TPU printed `Unable to initialize backend 'tpu'` in evaluate and report: JAX is told
    there is only the CPU (docs/console.md lists what the stages still print)."""
    assert "Running stage 'evaluate'" in trained_pipeline.repro_output
    assert "Running stage 'report'" in trained_pipeline.repro_output
    assert "backend 'tpu'" not in trained_pipeline.repro_errors
    assert "libtpu" not in trained_pipeline.repro_errors


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
    assert {"per_class/7/precision", "per_class/7/recall", "per_class/7/f1"} <= set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1, 2]
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in artifacts
    reports = {item.path for item in client.list_artifacts(run_id, "reports")}
    assert {"reports/mistakes.png", "reports/calibration.png", "reports/activation_maps.png"} <= (
        reports
    )
    assert "test_expected_calibration_error" in run.data.metrics
    assert "receptive_fields.json" in {item.path for item in client.list_artifacts(run_id)}
    versions = client.search_model_versions("name='cnn-pipeline'")
    assert [version.run_id for version in versions] == [run_id]


@pytest.mark.slow  # promote, then predict twice (two TensorFlow starts): `make test-all`
def test_registered_versions_carry_test_results_and_promote_sets_the_champion(
    repo: Path, tmp_path: Path
) -> None:
    client = mlflow_client(repo)
    (version,) = client.search_model_versions("name='cnn-pipeline'")
    test_metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert float(version.tags["test_accuracy"]) == pytest.approx(test_metrics["test_accuracy"])
    assert version.tags["dataset"] == "digits"
    assert "Test accuracy" in version.description

    missing = run_command(
        ["cnn-pipeline", "promote", "--version", "9"], repo, check=False
    ).stderr.strip()
    assert missing == (
        "cnn-pipeline promote: error: 'cnn-pipeline' has no version 9; it has versions 1"
    )
    promoted = run_command(["cnn-pipeline", "promote"], repo)
    assert "models:/cnn-pipeline@champion is now version 1" in promoted.stderr
    test = np.load(repo / "data/prepared/test.npz")
    from PIL import Image

    image_file = tmp_path / "digit.png"
    Image.fromarray(test["images"][0][:, :, 0]).save(image_file)
    by_alias = run_command(
        [
            "cnn-pipeline",
            "predict",
            "--json",
            "--invert",
            "no",
            "--model",
            "models:/cnn-pipeline@champion",
            str(image_file),
        ],
        repo,
    )
    by_file = run_command(
        ["cnn-pipeline", "predict", "--json", "--invert", "no", str(image_file)], repo
    )
    assert json.loads(by_alias.stdout)["top"] == json.loads(by_file.stdout)["top"]


def test_second_repro_is_a_no_op(repo: Path) -> None:
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) == []
    assert "up to date" in result.stdout


def model_weights(model_file: Path) -> dict[str, np.ndarray]:
    """Every weight array in a .keras file (the file's own bytes hold a save date)."""
    import h5py

    with zipfile.ZipFile(model_file) as archive:
        weights_file = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    arrays: dict[str, np.ndarray] = {}
    weights_file.visititems(
        lambda name, item: (
            arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
        )
    )
    return arrays


@pytest.mark.slow  # a server start or a second training: tens of seconds
def test_training_again_on_the_same_machine_gives_identical_weights_and_metrics(
    repo: Path, tmp_path: Path
) -> None:
    """The determinism promise of docs/experimenting.md: same params, seed, data, library
    versions, CPU instruction set and thread count give bit-identical results. A second
    training of the pipeline's params, in another folder, must match the first bit for bit."""
    shutil.copy2(repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(repo / "data/prepared", tmp_path / "data/prepared")

    run_command(["cnn-pipeline", "train"], tmp_path)

    for name in ("metrics/train_history.csv", "reports/receptive_fields.json"):
        assert (tmp_path / name).read_bytes() == (repo / name).read_bytes(), name
    first, second = (
        {
            key: value
            for key, value in json.loads((folder / "metrics/train.json").read_text()).items()
            if "loss" in key or "accuracy" in key
        }
        for folder in (repo, tmp_path)
    )
    assert first == second and first
    first_weights = model_weights(repo / "models/model.keras")
    second_weights = model_weights(tmp_path / "models/model.keras")
    assert first_weights.keys() == second_weights.keys() and first_weights
    for name, array in first_weights.items():
        np.testing.assert_array_equal(second_weights[name], array, err_msg=name)


def test_evaluation_only_change_does_not_retrain(repo: Path) -> None:
    edit_params(repo, "evaluate", "confusion_normalize", True)
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) == ["check", "evaluate"]


def test_exp_run_composes_conf_and_reruns_only_training(repo: Path) -> None:
    """A hand edit that -S does not name stops `dvc exp run` before anything runs, with the
    command that keeps it; that command, run as printed, keeps it and retrains."""
    edit_params(repo, "evaluate", "batch_size", 100)  # a hand edit that -S does not name
    params_before = (repo / "params.yaml").read_text()
    command = ["dvc", "exp", "run", "-n", "faster-lr", "-S", "train.epochs=1"]
    refused = run_command([*command, "-S", "train.learning_rate=0.005"], repo, check=False)
    assert refused.returncode != 0
    assert running_stages(refused.stdout) == []
    assert (repo / "params.yaml").read_text() == params_before
    refusal = refused.stderr.strip().splitlines()[-1]
    assert refusal.startswith("ERROR: cnn-pipeline: nothing was run or queued: "), refused.stderr
    suggested = shlex.split(refusal.split("To keep them, run: ")[1].split(" (to drop them")[0])
    assert "evaluate.batch_size=100" in suggested

    result = run_command(suggested, repo)

    assert running_stages(result.stdout) == ["check", "train", "evaluate", "report"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == 0.005
    assert params["evaluate"]["batch_size"] == 100  # kept, as the refusal's command says

    client = mlflow_client(repo)
    experiment = client.get_experiment_by_name("cnn-pipeline")
    runs = client.search_runs([experiment.experiment_id], "tags.`dvc.experiment` = 'faster-lr'")
    assert len(runs) == 1
    assert runs[0].data.params["train.learning_rate"] == "0.005"
    assert "test_accuracy" in runs[0].data.metrics


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def server(arguments: list[str], repo: Path, port: int, log: Path | None = None) -> Iterator[str]:
    """Start an MLflow server process on 127.0.0.1:port; stop it (and its workers) afterwards.
    With `log`, its stderr goes there, and TensorFlow's log level is left to the server."""
    environment = command_environment()
    if log is not None:
        environment.pop("TF_CPP_MIN_LOG_LEVEL")
    process = subprocess.Popen(
        arguments,
        cwd=repo,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if log is None else log.open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # uvicorn and TensorFlow imports on 2 cores
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{arguments[:3]} did not start on {url}") from None
                time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def post_json(url: str, document: object) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow  # a server start or a second training: tens of seconds
def test_served_model_answers_like_cnn_pipeline_predict(repo: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    from cnn_pipeline.predict import load_image

    images = []
    for index, shape in enumerate(("line", "ellipse")):
        picture = Image.new("L", (40, 40), 255)
        draw = ImageDraw.Draw(picture)
        if shape == "line":
            draw.line([(20, 4), (20, 36)], fill=0, width=5)
        else:
            draw.ellipse([8, 4, 32, 36], outline=0, width=5)
        images.append(tmp_path / f"image{index}.png")
        picture.save(images[-1])
    predicted = run_command(
        [
            "cnn-pipeline",
            "predict",
            "--json",
            "--top",
            "10",
            "--model",
            "models:/cnn-pipeline/1",
            *map(str, images),
        ],
        repo,
    )
    expected = [
        {entry["class"]: entry["probability"] for entry in json.loads(line)["top"]}
        for line in predicted.stdout.splitlines()
    ]
    # The request as docs/using-the-model.md writes it, from a folder of the repository: the
    # images read as predict reads them (ink on paper inverted for light-on-dark digits).
    request = run_command(
        [
            "cnn-pipeline",
            "predict",
            "--request",
            "--model",
            "models:/cnn-pipeline/1",
            *map(str, images),
        ],
        repo / "data",
    ).stdout
    arrays = [load_image(path, (8, 8, 1), "auto", "light_on_dark") for path in images]
    assert np.array_equal(np.array(json.loads(request)["inputs"]), np.stack(arrays))

    port = free_port()
    command = ["cnn-pipeline", "serve", "--model", "models:/cnn-pipeline/1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with server(command, repo / "data", port, log) as url:
        answer = post_json(f"{url}/invocations", json.loads(request))
        refusals = {
            "the input has shape (1, 28, 28, 1)": [np.zeros((28, 28, 1), int).tolist()],
            "the pixels look scaled to 0-1": [(arrays[0] / 255).tolist()],
            "the pixels are text values": [np.full((8, 8, 1), "7").tolist()],
        }
        answered = {problem: post_error(url, bad) for problem, bad in refusals.items()}

    for served, probabilities in zip(answer["predictions"], expected, strict=True):
        assert served["class"] == max(probabilities, key=probabilities.__getitem__)
        assert served["probability"] == pytest.approx(max(probabilities.values()), abs=1e-5)
        for name, probability in probabilities.items():
            assert served[name] == pytest.approx(probability, abs=1e-5)
    # A short answer naming what the model takes, not the whole request echoed.
    for problem, (status, message) in answered.items():
        assert status == 400, message
        assert problem in message
        assert "the model takes (N, 8, 8, 1) raw 0-255 pixels (8x8 grayscale, light on dark)" in (
            message
        )
        assert len(message) < 1000, message
    # A quiet console: no download progress bar, no TensorFlow error without a GPU.
    printed = log.read_text()
    assert "Downloading artifacts" not in printed
    assert "cuInit" not in printed
    assert "Uvicorn running on" in printed


def post_error(url: str, images: object) -> tuple[int, str]:
    """POST a request the served model must refuse: its HTTP status and message."""
    try:
        post_json(f"{url}/invocations", {"inputs": images})
    except urllib.error.HTTPError as error:
        return error.code, str(json.loads(error.read())["message"])
    raise AssertionError("the served model answered a request it should have refused")


@pytest.mark.slow  # a server start or a second training: tens of seconds
def test_mlflow_rest_api_compares_the_two_runs(repo: Path) -> None:
    port = free_port()
    command = [
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{repo / 'mlflow.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with server(command, repo, port) as url:
        experiment = _get_json(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cnn-pipeline"
        )
        found = post_json(
            f"{url}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment["experiment"]["experiment_id"]]},
        )
    runs = {
        _param(run, "train.learning_rate"): {m["key"]: m["value"] for m in run["data"]["metrics"]}
        for run in found["runs"]
    }
    assert set(runs) == {"0.002", "0.005"}
    for metrics in runs.values():
        assert {"test_accuracy", "test_loss", "val_accuracy"} <= set(metrics)
    assert runs["0.002"]["test_loss"] != runs["0.005"]["test_loss"]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _param(run: dict[str, Any], key: str) -> str:
    return next(p["value"] for p in run["data"]["params"] if p["key"] == key)
