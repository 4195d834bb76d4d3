"""MLflow tracking: the store opened safely by several processes at once, a store that cannot
be reached failing before training, runs named and tagged so that they can be told apart."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cnn_pipeline.errors import UserError
from cnn_pipeline.tracking import runs, store

from conftest import REPO_ROOT, command_environment, copy_repository, run_command


def context(tmp_path: Path, uri: str | None = None) -> store.TrackingContext:
    return store.TrackingContext(
        repo_root=tmp_path,
        tracking_uri=uri or store.default_tracking_uri(tmp_path),
        dvc_experiment=None,
        baseline_commit=None,
        uses_default_store=uri is None,
    )


# Opens a fresh default store in argv[1], creates a run with one metric and ends it.
OPEN_AND_RECORD = """
import sys
from pathlib import Path
from cnn_pipeline.tracking import runs, store
folder = Path(sys.argv[1])
context = store.TrackingContext(folder, store.default_tracking_uri(folder), None, None)
experiment = store.open_experiment(context, "sweep")
description = runs.RunDescription(f"run-{sys.argv[2]}", {}, {"train": {"seed": sys.argv[2]}})
with runs.training_run(experiment, description, interrupted_run_id=None):
    import mlflow
    mlflow.log_metric("loss", 1.0, step=1)
"""


def test_processes_starting_together_on_a_fresh_store_all_record_their_runs(
    tmp_path: Path,
) -> None:
    """`dvc queue start -j 2` starts stages at once: without a lock, MLflow's schema
    migration and the experiment's creation race (duplicate column, RESOURCE_ALREADY_EXISTS)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_RECORD, str(tmp_path), str(index)],
            env=command_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(4)
    ]
    failures = [process.communicate()[1][-2000:] for process in processes if process.wait()]
    assert not failures, failures
    import mlflow

    client = mlflow.MlflowClient(store.default_tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("sweep")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == [f"run-{index}" for index in range(4)]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_fails_fast_with_one_line_naming_it(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        store.open_experiment(context(tmp_path, uri), "test")
    assert time.monotonic() - started < 30
    message = str(raised.value)
    assert "\n" not in message
    assert uri in message
    assert "MLFLOW_TRACKING_URI" in message


def test_a_server_decides_where_artifacts_go(tmp_path: Path) -> None:
    assert context(tmp_path, "http://127.0.0.1:5000").artifact_location is None
    assert context(tmp_path).artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_runs_are_named_after_what_differs_from_the_defaults(tmp_path: Path) -> None:
    params = {"model": {"name": "simple_cnn"}, "train": {"learning_rate": 0.003}}
    plain = runs.describe_training(context(tmp_path), params, "digits", {})
    assert plain.name == "simple_cnn-digits"
    assert "params_changed" not in plain.tags
    changed = runs.describe_training(
        context(tmp_path), params, "digits", {"train.learning_rate": "0.003"}
    )
    assert changed.name == "simple_cnn-digits train.learning_rate=0.003"
    assert changed.tags["params_changed"] == "train.learning_rate=0.003"
    in_experiment = runs.describe_training(
        store.TrackingContext(tmp_path, "sqlite://", "brisk-lark", "abc"),
        params,
        "digits",
        {"model": "lenet5", "train.learning_rate": "0.003"},
    )
    assert plain.tags["workspace_modified"] == "false"
    edited = tracking_context_with_changes(tmp_path)
    described = runs.describe_training(edited, params, "digits", {})
    assert described.tags["workspace_modified"] == "true"
    assert described.tags["workspace_changes"] == "params.yaml"
    assert in_experiment.name == "brisk-lark model=lenet5 train.learning_rate=0.003"
    assert in_experiment.tags["dvc.experiment"] == "brisk-lark"
    assert in_experiment.tags["mlflow.source.git.commit"] == "abc"


def test_results_for_a_run_the_store_no_longer_has_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logged = runs.log_to_run("0" * 32, context(tmp_path), {"test_accuracy": 1.0}, [], "x")
    assert logged is False
    assert "is not in" in caplog.text


def test_the_train_stage_stops_before_importing_tensorflow_when_the_store_is_unreachable(
    tmp_path: Path,
) -> None:
    """One line naming the server, within seconds: no TensorFlow import, no training."""
    workdir = tmp_path / "repo"
    (workdir / "data").mkdir(parents=True)
    params = REPO_ROOT / "params.yaml"
    (workdir / "params.yaml").write_text(params.read_text())
    run_command(["cnn-pipeline", "download"], workdir)
    run_command(["cnn-pipeline", "preprocess"], workdir)
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = run_command(
        ["cnn-pipeline", "train"],
        workdir,
        check=False,
        MLFLOW_TRACKING_URI=uri,
        PYTHONPATH=str(_refusing_tensorflow(tmp_path)),
    )
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"cnn-pipeline train: error: MLflow cannot record the run in {uri}")
    assert not (workdir / "models").exists()


def _refusing_tensorflow(tmp_path: Path) -> Path:
    """A PYTHONPATH folder whose `tensorflow` fails to import: proof that it was not needed."""
    folder = tmp_path / "refuse"
    folder.mkdir()
    (folder / "tensorflow.py").write_text("raise ImportError('tensorflow refused by the test')\n")
    return folder


def tracking_context_with_changes(tmp_path: Path) -> store.TrackingContext:
    """A git repository whose params.yaml was edited by hand after the commit, and whose
    dvc.lock (which DVC rewrites during a run) changed too."""
    repo = tmp_path / "edited"
    repo.mkdir()
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t"}
    identity["GIT_COMMITTER_EMAIL"] = "t@e"
    for name in ("params.yaml", "dvc.lock"):
        (repo / name).write_text("a: 1\n")
    for arguments in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        run_command(arguments, repo, **identity)
    for name in ("params.yaml", "dvc.lock"):
        (repo / name).write_text("a: 2\n")
    return store.TrackingContext.from_environment(repo)


def test_changes_are_described_as_a_person_sets_them(tmp_path: Path) -> None:
    """From the commit's params.yaml: a switched config group is `model=lenet5` (then only
    what differs from lenet5.yaml), not every model.* key; mirrors and MLflow names never."""
    from cnn_pipeline.compose import compose_params, describe_changes

    config_dir = REPO_ROOT / "conf"
    committed = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    lenet = yaml.safe_load(
        compose_params(config_dir, ["model=lenet5", "train.learning_rate=0.003"])
    )
    assert describe_changes(lenet, committed, config_dir) == {
        "model": "lenet5",
        "train.learning_rate": "0.003",
    }
    lenet["model"]["dropout_rate"] = 0.25
    lenet["data"]["mirror"] = "/srv/mirror"
    lenet["mlflow"]["experiment_name"] = "elsewhere"
    assert describe_changes(lenet, committed, config_dir) == {
        "model": "lenet5",
        "model.dropout_rate": "0.25",
        "train.learning_rate": "0.003",
    }
    # A sweep over a committed lenet5 names only what the sweep changes.
    committed_lenet = yaml.safe_load(compose_params(config_dir, ["model=lenet5"]))
    swept = yaml.safe_load(compose_params(config_dir, ["model=lenet5", "train.epochs=3"]))
    assert describe_changes(swept, committed_lenet, config_dir) == {"train.epochs": "3"}
    assert describe_changes(committed, committed, config_dir) == {}


def test_only_sources_count_as_workspace_changes(tmp_path: Path) -> None:
    """What a stage writes (every dvc.yaml output, dvc.lock) never makes a run
    `workspace_modified`: DVC deletes reports/receptive_fields.json, committed as a `cache:
    false` output, before training. Code, conf/ and params.yaml do."""
    repo = copy_repository(tmp_path / "clone")
    (repo / "reports/receptive_fields.json").unlink()
    (repo / "metrics/train.json").write_text("{}\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    assert store.TrackingContext.from_environment(repo).modified_files == ()
    assert (
        runs.describe_training(
            store.TrackingContext.from_environment(repo),
            {"model": {"name": "simple_cnn"}},
            "digits",
            {},
        ).tags["workspace_modified"]
        == "false"
    )

    for source in ("conf/model/lenet5.yaml", "src/cnn_pipeline/training.py", "params.yaml"):
        with (repo / source).open("a") as stream:
            stream.write("\n# edited\n")
    assert store.TrackingContext.from_environment(repo).modified_files == (
        "conf/model/lenet5.yaml",
        "params.yaml",
        "src/cnn_pipeline/training.py",
    )


def test_a_refused_connection_is_not_read_as_refused_credentials_whatever_the_port() -> None:
    """A free port such as 40169 holds the digits 401: only the status code 401 means that
    the server refused the credentials."""
    context = store.TrackingContext(
        Path("."), "http://127.0.0.1:40169", None, None, uses_default_store=False
    )
    refused = ConnectionError(
        "API request to http://127.0.0.1:40169/api/2.0/mlflow/experiments/get-by-name failed: "
        "Max retries exceeded (Caused by NewConnectionError: Connection refused)"
    )
    assert store.store_problem(context, refused).startswith(
        "MLflow cannot record the run in http://127.0.0.1:40169"
    )
    unauthorized = ConnectionError(
        "API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with error "
        "code 401 != 200. Response body: 'You are not authenticated.'"
    )
    assert "refused the credentials" in store.store_problem(context, unauthorized)
