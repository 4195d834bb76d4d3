"""Resume after an interruption, as a user meets it: `dvc repro` interrupted by Ctrl-C (SIGINT
to the whole process group, as a terminal sends it) or killed, then `dvc repro` again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import command_environment, copy_repository, run_command

pytestmark = pytest.mark.e2e

EPOCHS = 6


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = copy_repository(tmp_path)
    run_command(["cnn-pipeline", "params", f"train.epochs={EPOCHS}"], repo)
    run_command(["dvc", "repro", "preprocess"], repo)
    return repo


def interrupted_repro(repo: Path, at_line: str, signal_number: int) -> tuple[int, str]:
    """Run `dvc repro train`; send `signal_number` to its process group once a printed line
    starts with `at_line`. Returns the exit status and everything printed."""
    process = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=repo,
        env=command_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As from a terminal: a test suite run as a background job of a non-interactive shell
        # (some CI runners) would hand its ignored SIGINT down to dvc and the stage.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith(at_line):
            os.killpg(process.pid, signal_number)
            break
    printed.append(process.stdout.read())
    return process.wait(timeout=120), "".join(printed)


def mlflow_runs(repo: Path) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cnn-pipeline")
    return list(client.search_runs([experiment.experiment_id]))


def loss_steps(repo: Path, run_id: str) -> list[int]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    return [metric.step for metric in client.get_metric_history(run_id, "loss")]


def repro_train(repo: Path) -> str:
    result = run_command(["dvc", "repro", "train"], repo)
    return result.stdout + result.stderr


def history_epochs(repo: Path) -> list[int]:
    lines = (repo / "metrics/train_history.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def test_ctrl_c_keeps_the_finished_epochs_and_repro_resumes_in_the_same_run(repo: Path) -> None:
    status, printed = interrupted_repro(repo, "Epoch 3/", signal.SIGINT)
    assert status != 0, printed[-4000:]
    assert "Traceback" not in printed
    message = re.search(
        r"^cnn-pipeline train: training interrupted after epoch (\d) of 6; "
        r"`dvc repro` resumes from epoch (\d)",
        printed,
        re.MULTILINE,
    )
    assert message, printed[-3000:]
    finished = int(message.group(1))
    assert finished >= 2 and int(message.group(2)) == finished + 1
    (interrupted,) = mlflow_runs(repo)
    assert interrupted.info.status == "KILLED"  # never FINISHED, never left RUNNING

    resumed = repro_train(repo)
    assert "resuming the interrupted training" in resumed
    assert f"Epoch {finished}/" not in resumed
    assert f"Epoch {finished + 1}/{EPOCHS}" in resumed
    assert history_epochs(repo) == list(range(1, EPOCHS + 1))
    (run,) = mlflow_runs(repo)
    assert run.info.run_id == interrupted.info.run_id
    assert run.info.status == "FINISHED"
    assert loss_steps(repo, run.info.run_id) == list(range(1, EPOCHS + 1))
    checkpoints = sorted(path.name for path in (repo / "models/checkpoints").iterdir())
    assert checkpoints == [f"epoch_{epoch:03d}.keras" for epoch in range(1, EPOCHS + 1)]
    assert not list((repo / ".dvc/tmp/train-resume").iterdir())  # removed once finished
    assert json.loads((repo / "models/mlflow_run.json").read_text())["run_id"] == run.info.run_id


@pytest.mark.slow
def test_a_killed_training_resumes_too(repo: Path) -> None:
    status, _ = interrupted_repro(repo, "Epoch 4/", signal.SIGKILL)
    assert status == -signal.SIGKILL
    resumed = repro_train(repo)
    assert "resuming the interrupted training" in resumed
    assert "Epoch 1/" not in resumed
    assert history_epochs(repo) == list(range(1, EPOCHS + 1))
    (run,) = mlflow_runs(repo)
    assert run.info.status == "FINISHED"
    assert loss_steps(repo, run.info.run_id) == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_changed_params_start_afresh_instead_of_resuming_another_configuration(
    repo: Path,
) -> None:
    interrupted_repro(repo, "Epoch 3/", signal.SIGTERM)
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["learning_rate"] = 0.001
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    fresh = repro_train(repo)
    assert "resuming" not in fresh
    assert f"Epoch 1/{EPOCHS}" in fresh
    statuses = sorted(run.info.status for run in mlflow_runs(repo))
    assert statuses == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_a_backup_truncated_by_kill_9_starts_afresh_instead_of_failing_every_run(
    repo: Path,
) -> None:
    interrupted_repro(repo, "Epoch 3/", signal.SIGINT)
    (backup,) = (repo / ".dvc/tmp/train-resume").glob("*/backup/latest.weights.h5")
    backup.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])  # as a kill -9 leaves it
    fresh = repro_train(repo)
    assert "the interrupted training's backup cannot be read: training starts afresh" in fresh
    assert "resuming" not in fresh
    assert f"Epoch 1/{EPOCHS}" in fresh
    assert history_epochs(repo) == list(range(1, EPOCHS + 1))
    statuses = sorted(run.info.status for run in mlflow_runs(repo))
    assert statuses == ["FINISHED", "KILLED"]
