"""A team's setup, end to end: the trial team server (PostgreSQL, moto's S3 stand-in and
`mlflow server` with basic auth, from scripts/team_server.py), a DVC remote on that S3, and
experiments shared through a bare git repository.

Every server is real and listens on a free port of 127.0.0.1; the module starts them once and
stops them at its end. The unmarked tests run one `dvc repro` against the server; the ones
marked slow train several times (parallel runs, a server restart, clones sharing models).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import team_server
import team_services
from conftest import REPO_ROOT, command_environment, copy_repository, run_command

pytestmark = pytest.mark.e2e

DVC_BUCKET = "dvc"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


@pytest.fixture(scope="module")
def server() -> Iterator[team_server.TeamServer]:
    try:
        team_services.postgres_bin_dir()
    except team_services.TeamServerError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
    # Not pytest's tmp_path: as root PostgreSQL runs as `postgres`, which must reach its
    # folder, and pytest's temporary folders are private to their owner.
    data_dir = Path(tempfile.mkdtemp(prefix="cnn-pipeline-team-", dir="/tmp"))
    started = team_server.start(data_dir, team_services.free_port(), auth=True, workers=1)
    try:
        yield started
    finally:
        team_server.stop(data_dir, started)
        shutil.rmtree(data_dir, ignore_errors=True)


def client_env(server: team_server.TeamServer, **extra: str) -> dict[str, str]:
    """What a teammate sets: the server's URL and credentials (no S3 keys), plus `extra`."""
    return {**server.client_environment(), **extra}


def mlflow_client(server: team_server.TeamServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    import mlflow

    for key, value in server.client_environment().items():
        monkeypatch.setenv(key, value)
    return mlflow.MlflowClient(tracking_uri=server.tracking_uri)


def server_experiment(client: Any, name: str) -> str:
    """An experiment created on the server without an artifact location: its artifacts go
    to the server's S3 (what tracking.py will do for a server once the lead's change lands)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name))


def s3_keys(server: team_server.TeamServer, bucket: str, prefix: str = "") -> list[str]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=server.s3_endpoint_url,
        aws_access_key_id=team_server.S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=team_server.S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=team_server.S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def run_id_of(repo: Path) -> str:
    run_id: str = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    return run_id


def assert_run_on_server(
    client: Any, server: team_server.TeamServer, repo: Path, epochs: int = 2
) -> None:
    """The run `repo` trained is on the server, finished, with its metrics and a model whose
    files are in the server's bucket and not in the clone's own mlartifacts/."""
    run = client.get_run(run_id_of(repo))
    assert run.info.status == "FINISHED"
    steps = [metric.step for metric in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert steps == list(range(1, epochs + 1))
    test_metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(test_metrics["test_accuracy"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    listed = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert "receptive_fields.json" in listed
    keys = s3_keys(server, team_server.BUCKET, f"artifacts/{run.info.experiment_id}/")
    assert any(key.endswith(f"{run.info.run_id}/artifacts/receptive_fields.json") for key in keys)
    assert any(key.endswith("/MLmodel") for key in keys), keys
    assert not (repo / "mlartifacts").exists()


@pytest.fixture(scope="module")
def team_repo(server: team_server.TeamServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone that ran `dvc repro` (digits, 2 epochs) logging to the team server."""
    with pytest.MonkeyPatch.context() as patch:
        server_experiment(mlflow_client(server, patch), "team-e2e")
    repo = copy_repository(tmp_path_factory.mktemp("team"))
    run_command(
        ["cnn-pipeline", "params", "train.epochs=2", "mlflow.experiment_name=team-e2e"], repo
    )
    result = run_command(["dvc", "repro"], repo, **client_env(server))
    assert running_stages(result.stdout) == STAGES
    return repo


STAGES = ["check", "download", "preprocess", "train", "evaluate", "report"]


def test_repro_logs_run_metrics_and_model_to_the_server(
    server: team_server.TeamServer, team_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow_client(server, monkeypatch)
    assert_run_on_server(client, server, team_repo)
    run = client.get_run(run_id_of(team_repo))
    versions = client.search_model_versions(f"run_id='{run.info.run_id}'")
    assert [version.name for version in versions] == ["cnn-pipeline"]
    # The runs are in PostgreSQL: the clone has no local store of its own.
    assert not (team_repo / "mlflow.db").exists()


@pytest.mark.slow  # a second training against the server: `make test-all`
def test_new_experiment_on_a_server_keeps_artifacts_on_the_server(
    server: team_server.TeamServer,
    team_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The experiment does not exist yet on the server: the train stage creates it, and
    its artifacts must go to the server's bucket, not to the clone's mlartifacts/."""
    client = mlflow_client(server, monkeypatch)
    assert client.get_experiment_by_name("team-fresh") is None
    clone = copy_trained(team_repo, tmp_path / "clone", mlflow__experiment_name="team-fresh")
    run_command(["cnn-pipeline", "train"], clone, **client_env(server))
    experiment = client.get_experiment_by_name("team-fresh")
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")
    run = client.get_run(run_id_of(clone))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert not (clone / "mlartifacts").exists()


def train_refused(repo: Path, environment: dict[str, str], uri: str) -> None:
    """`cnn-pipeline train`, in a copy of `repo`, stops with one line naming `uri` before
    the first epoch."""
    result = subprocess.run(
        ["cnn-pipeline", "train"],
        cwd=repo,
        env=command_environment(**environment),
        capture_output=True,
        text=True,
        timeout=150,  # a check before training answers long before this
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Epoch 1/" not in output  # stopped before training
    error_line = result.stderr.strip().splitlines()[-1]
    assert uri in error_line, error_line
    assert "Traceback" not in result.stderr


def test_wrong_password_stops_train_before_training(
    server: team_server.TeamServer, team_repo: Path, tmp_path: Path
) -> None:
    environment = client_env(server, MLFLOW_TRACKING_PASSWORD="not-the-password")
    train_refused(copy_trained(team_repo, tmp_path / "clone"), environment, server.tracking_uri)


def test_unreachable_server_stops_train_before_training(team_repo: Path, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{team_services.free_port()}"  # nothing listens there
    started = time.monotonic()
    train_refused(copy_trained(team_repo, tmp_path / "clone"), {"MLFLOW_TRACKING_URI": uri}, uri)
    assert time.monotonic() - started < 120


def copy_trained(repo: Path, destination: Path, **params: object) -> Path:
    """A copy of a trained clone (prepared data included) with `params` (section.key) set."""
    shutil.copytree(repo, destination, symlinks=True)
    params_file = destination / "params.yaml"
    document = yaml.safe_load(params_file.read_text())
    for dotted, value in params.items():
        section, key = dotted.split("__")
        document[section][key] = value
    params_file.write_text(yaml.safe_dump(document, sort_keys=False))
    return destination


@pytest.mark.slow
def test_parallel_runs_all_reach_the_server(
    server: team_server.TeamServer,
    team_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """N trainings at once, from N clones, logging to one server: every run, metric and
    model is there."""
    count = 4
    client = mlflow_client(server, monkeypatch)
    experiment_id = server_experiment(client, "team-parallel")
    clones = [
        copy_trained(
            team_repo,
            tmp_path / f"clone{index}",
            train__seed=index,
            mlflow__experiment_name="team-parallel",
        )
        for index in range(count)
    ]
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            ["cnn-pipeline", "train"],
            cwd=clone,
            env=command_environment(**client_env(server)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for clone in clones
    ]
    outputs = [process.communicate(timeout=900)[0] for process in processes]
    seconds = time.monotonic() - started
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    runs = client.search_runs([experiment_id])
    assert len(runs) == count
    assert {run.info.run_id for run in runs} == {run_id_of(clone) for clone in clones}
    keys = s3_keys(server, team_server.BUCKET, f"artifacts/{experiment_id}/")
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [metric.step for metric in history] == [1, 2]
        assert any(f"{run.info.run_id}/artifacts/receptive_fields.json" in key for key in keys)
    models = [key for key in keys if key.endswith("/MLmodel")]
    assert len(models) >= count, models
    print(f"{count} parallel trainings to the server: {seconds:.1f} s, {len(runs)} runs")


@pytest.mark.slow
def test_server_restart_during_training_loses_no_metric(
    server: team_server.TeamServer,
    team_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mlflow server` is killed after the first epoch's metrics and restarted: MLflow's
    client retries, and every epoch's metrics arrive."""
    epochs = 30
    client = mlflow_client(server, monkeypatch)
    server_experiment(client, "team-restart")
    clone = copy_trained(
        team_repo,
        tmp_path / "clone",
        train__epochs=epochs,
        mlflow__experiment_name="team-restart",
    )
    process = subprocess.Popen(
        ["cnn-pipeline", "train"],
        cwd=clone,
        env=command_environment(**client_env(server)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run_id = wait_for_first_metric(client, "team-restart", process)
        team_services.stop_process_group(server.mlflow_pid)
        stopped = time.monotonic()
        time.sleep(3)
        team_server.start_mlflow(server, workers=1)
        down_seconds = time.monotonic() - stopped
        output = process.communicate(timeout=900)[0]
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:]
    steps = [metric.step for metric in client.get_metric_history(run_id, "val_accuracy")]
    lost = epochs - len(set(steps))
    print(f"server down {down_seconds:.1f} s during training: {lost} of {epochs} epochs lost")
    assert sorted(set(steps)) == list(range(1, epochs + 1))
    assert client.get_run(run_id).info.status == "FINISHED"


def wait_for_first_metric(client: Any, experiment: str, process: subprocess.Popen[str]) -> str:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before its first epoch was logged"
        for run in client.search_runs([experiment_id]):
            if client.get_metric_history(run.info.run_id, "val_accuracy"):
                run_id: str = run.info.run_id
                return run_id
        time.sleep(0.5)
    raise AssertionError("no epoch logged within 600 s")


def add_dvc_remote(repo: Path, server: team_server.TeamServer) -> None:
    """The DVC remote commands of docs/team.md (committed to .dvc/config), then the keys."""
    run_command(["dvc", "remote", "add", "-d", "team", f"s3://{DVC_BUCKET}/cache"], repo)
    run_command(["dvc", "remote", "modify", "team", "endpointurl", server.s3_endpoint_url], repo)
    set_dvc_credentials(repo)


def set_dvc_credentials(repo: Path) -> None:
    """Each machine's S3 keys, in .dvc/config.local (never committed)."""
    for option, variable in (
        ("access_key_id", "AWS_ACCESS_KEY_ID"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ):
        value = team_server.S3_CREDENTIALS[variable]
        run_command(["dvc", "remote", "modify", "--local", "team", option, value], repo)


def git(repo: Path, *arguments: str) -> str:
    return run_command(["git", *arguments], repo, **GIT_IDENTITY).stdout


def clone_from(remote: Path, destination: Path) -> Path:
    run_command(["git", "clone", "-q", str(remote), str(destination)], remote.parent)
    set_dvc_credentials(destination)
    return destination


@pytest.fixture(scope="module")
def git_remote(
    server: team_server.TeamServer, team_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A bare repository holding `team_repo` with the DVC remote configured and its dvc.lock
    committed; the DVC remote holds its outputs and run cache."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=server.s3_endpoint_url,
        aws_access_key_id=team_server.S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=team_server.S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=team_server.S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=DVC_BUCKET)
    remote = tmp_path_factory.mktemp("remote") / "cnn-pipeline.git"
    run_command(["git", "init", "-q", "--bare", str(remote)], remote.parent)
    add_dvc_remote(team_repo, server)
    git(team_repo, "add", "-A")
    git(team_repo, "commit", "-q", "-m", "trained on digits; DVC remote on the team's S3")
    git(team_repo, "remote", "add", "origin", str(remote))
    git(team_repo, "push", "-q", "origin", "HEAD:main")
    run_command(["git", "symbolic-ref", "HEAD", "refs/heads/main"], remote)
    started = time.monotonic()
    run_command(["dvc", "push", "--run-cache"], team_repo)
    print(f"dvc push --run-cache: {time.monotonic() - started:.1f} s")
    return remote


@pytest.mark.slow
def test_second_clone_pulls_instead_of_training(
    server: team_server.TeamServer, team_repo: Path, git_remote: Path, tmp_path: Path
) -> None:
    clone = clone_from(git_remote, tmp_path / "second")
    started = time.monotonic()
    run_command(["dvc", "pull", "--run-cache"], clone)
    pulled = time.monotonic() - started
    started = time.monotonic()
    result = run_command(["dvc", "repro"], clone, **client_env(server))
    repro = time.monotonic() - started
    print(f"dvc pull --run-cache: {pulled:.1f} s; dvc repro after it: {repro:.1f} s")
    assert running_stages(result.stdout) == []
    assert run_command(["dvc", "status"], clone).stdout.strip().endswith("up to date.")
    shown = json.loads(run_command(["dvc", "metrics", "show", "--json"], clone).stdout)
    original = json.loads(run_command(["dvc", "metrics", "show", "--json"], team_repo).stdout)
    assert next(iter(shown.values())) == next(iter(original.values()))
    image = tmp_path / "digit.png"
    write_digit_png(image)
    predicted = run_command(["cnn-pipeline", "predict", "--json", str(image)], clone)
    answer = json.loads(predicted.stdout.strip().splitlines()[0])
    assert len(answer["top"]) == 3, answer


def write_digit_png(path: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * 255 / 16).astype(np.uint8)  # 8x8, ink is light
    Image.fromarray(pixels).save(path)


@pytest.mark.slow
def test_experiments_from_two_machines_meet_in_a_third(
    server: team_server.TeamServer,
    git_remote: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two clones each run part of a sweep and push it; a third sees all and takes the
    best one's model without training."""
    client = mlflow_client(server, monkeypatch)
    server_experiment(client, "team-sweep")
    sweep = {"first": ["0.001"], "second": ["0.003"]}
    names: list[str] = []
    for machine, rates in sweep.items():
        clone = clone_from(git_remote, tmp_path / machine)
        run_command(["dvc", "pull", "--run-cache"], clone)
        for rate in rates:
            name = f"{machine}-lr{rate}"
            run_command(
                [
                    "dvc",
                    "exp",
                    "run",
                    "-n",
                    name,
                    "-S",
                    f"train.learning_rate={rate}",
                    "-S",
                    "train.epochs=2",
                    "-S",
                    "mlflow.experiment_name=team-sweep",
                ],
                clone,
                **client_env(server),
            )
            names.append(name)
        run_command(["dvc", "exp", "push", "origin", *names[-len(rates) :]], clone)
    third = clone_from(git_remote, tmp_path / "third")
    run_command(["dvc", "exp", "pull", "origin"], third)  # all of this commit
    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], third).stdout)
    experiments = {
        experiment["name"]: experiment["revs"][0]["data"]
        for row in shown
        for experiment in row.get("experiments") or []
    }
    assert set(names) <= set(experiments), experiments
    accuracy = {
        name: experiments[name]["metrics"]["metrics/evaluate.json"]["data"]["test_accuracy"]
        for name in names
    }
    for name, rate in zip(names, ["0.001", "0.003"], strict=True):
        logged = experiments[name]["params"]["params.yaml"]["data"]["train"]["learning_rate"]
        assert str(logged) == rate
    best = max(accuracy, key=lambda name: accuracy[name])
    run_command(["dvc", "exp", "apply", best], third)
    run_command(["dvc", "pull"], third)
    assert run_command(["dvc", "status"], third).stdout.strip().endswith("up to date.")
    evaluated = json.loads((third / "metrics/evaluate.json").read_text())
    assert evaluated["test_accuracy"] == accuracy[best]
    assert (third / "models/model.keras").is_file()
    runs = client.search_runs([client.get_experiment_by_name("team-sweep").experiment_id])
    assert {run.data.tags.get("dvc.experiment") for run in runs} >= set(names)


@pytest.mark.slow
def test_two_machines_share_one_search_through_the_server(
    server: team_server.TeamServer,
    team_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two clones (two machines) run `cnn-pipeline tune` on one study in the server's
    PostgreSQL: trials are numbered across both, none is run twice, each is an experiment of
    the clone that ran it, and the server's MLflow shows them under one search run."""
    import optuna
    from test_search import TINY_SEARCH

    client = mlflow_client(server, monkeypatch)
    experiment_id = server_experiment(client, "team-search")
    clones = [
        copy_trained(team_repo, tmp_path / f"machine{index}", mlflow__experiment_name="team-search")
        for index in range(2)
    ]
    for clone in clones:
        (clone / "conf" / "search" / "tiny.yaml").write_text(yaml.safe_dump(TINY_SEARCH))
    command = ["cnn-pipeline", "tune", "--search", "tiny", "--name", "shared", "--trials", "3"]
    # The clones' params.yaml name their MLflow experiment by hand: the search must keep it.
    command += ["train.epochs=1", "mlflow.experiment_name=team-search"]

    def start(clone: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            command,
            cwd=clone,
            env=command_environment(**client_env(server)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = start(clones[0])
    deadline = time.monotonic() + 300
    while not list((clones[0] / ".optuna" / "trials").glob("*.json")):  # its first trial queued
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the first machine queued no trial"
        time.sleep(1)
    second = start(clones[1])
    outputs = [process.communicate(timeout=900)[0] for process in (first, second)]
    for process, output in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name="shared", storage=server.search_storage_url)
    finished = [trial for trial in study.trials if trial.state.is_finished()]
    assert len(finished) >= 3
    ran_in = [
        set(run_command(["dvc", "exp", "ls", "--name-only"], clone).stdout.split())
        for clone in clones
    ]
    assert all(ran_in), f"each machine ran a trial: {ran_in}"
    assert not ran_in[0] & ran_in[1], f"a trial ran on both machines: {ran_in}"
    assert ran_in[0] | ran_in[1] == {f"shared-{trial.number}" for trial in finished}
    assert "(another machine)" in outputs[0] + outputs[1]

    (parent,) = client.search_runs([experiment_id], "attributes.run_name = 'shared'")
    children = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert {run.data.tags["dvc.experiment"] for run in children} == ran_in[0] | ran_in[1]


def test_team_server_script_stops_what_it_started(tmp_path: Path) -> None:
    """`stop` without a server started says so in one line."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts/team_server.py"),
            "stop",
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"team_server stop: error: {tmp_path / 'server.json'} is missing: "
        f"no team server was started from {tmp_path}"
    )


def timed(arguments: list[str], repo: Path, **environment: str) -> tuple[float, str]:
    started = time.monotonic()
    result = run_command(arguments, repo, **environment)
    return time.monotonic() - started, result.stdout


@pytest.mark.slow
def test_mnist_model_travels_through_the_dvc_remote(
    server: team_server.TeamServer,
    git_remote: Path,
    mnist_dir: Path,
    serve_directory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model trained on real MNIST (`experiment=mnist_fast`) is pushed by one clone and
    pulled by another, whose `dvc repro` then restores instead of training. Prints the
    seconds of each command (the team rows of docs/benchmarks.md)."""
    server_experiment(mlflow_client(server, monkeypatch), "team-mnist")
    first = clone_from(git_remote, tmp_path / "first")
    run_command(
        ["cnn-pipeline", "params", "experiment=mnist_fast", "mlflow.experiment_name=team-mnist"],
        first,
    )
    mirror = serve_directory(mnist_dir)
    trained, _ = timed(["dvc", "repro"], first, CNN_PIPELINE_MIRROR=mirror, **client_env(server))
    git(first, "add", "-A")
    git(first, "commit", "-q", "-m", "mnist_fast")
    git(first, "push", "-q", "origin", "HEAD:mnist")
    pushed, _ = timed(["dvc", "push", "--run-cache"], first)
    second = tmp_path / "second"
    run_command(["git", "clone", "-q", "-b", "mnist", str(git_remote), str(second)], tmp_path)
    set_dvc_credentials(second)
    pulled, _ = timed(["dvc", "pull", "--run-cache"], second)
    restored, output = timed(["dvc", "repro"], second, **client_env(server))
    assert running_stages(output) == [], output
    no_op, _ = timed(["dvc", "repro"], second, **client_env(server))
    status, _ = timed(["dvc", "status"], second)
    model_mb = (second / "models/model.keras").stat().st_size / 1e6
    print(
        f"MNIST mnist_fast: dvc repro {trained:.1f} s; dvc push --run-cache {pushed:.1f} s; "
        f"dvc pull --run-cache {pulled:.1f} s; dvc repro after the pull {restored:.1f} s; "
        f"no-op dvc repro {no_op:.1f} s; dvc status {status:.1f} s; model {model_mb:.2f} MB"
    )
    shown = json.loads(run_command(["dvc", "metrics", "show", "--json"], second).stdout)
    original = json.loads(run_command(["dvc", "metrics", "show", "--json"], first).stdout)
    assert next(iter(shown.values())) == next(iter(original.values()))
    assert json.loads((second / "metrics/evaluate.json").read_text())["test_accuracy"] > 0.98
