"""MLflow tracking through its public API: where runs are stored, the train stage's run, and
the later stages' additions to it.

The default store is `mlflow.db` (SQLite) plus `mlartifacts/` at the repository root, both
addressed absolutely: `dvc exp run --queue` runs stages in a temporary copy of the repository,
and a relative path there would lose the run. `MLFLOW_TRACKING_URI` points elsewhere, e.g. at
a team's `mlflow server`, which then decides where artifacts go.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_pipeline import paths
from cnn_pipeline.errors import UserError, first_line

logger = logging.getLogger(__name__)

# `mlflow ui` reads this experiment tag to open the runs table (model training) by default.
EXPERIMENT_KIND_TAG = {"mlflow.experimentKind": "custom_model_development"}

# A tracking server is asked once, before training, with these few retries: an unreachable
# server or a wrong password then stops the stage in seconds instead of after MLflow's
# default of 7 retries with backoff (minutes). Later calls retry as MLflow does by default,
# so a server restarted while training runs loses no metric.
PREFLIGHT_HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@dataclass(frozen=True)
class TrackingContext:
    """What the environment says about where and how this stage runs."""

    repo_root: Path  # the real repository, also when DVC runs the stage in a temporary copy
    tracking_uri: str
    dvc_experiment: str | None  # set by `dvc exp run`
    baseline_commit: str | None
    uses_default_store: bool = True  # SQLite + mlartifacts/ in the repository

    @classmethod
    def from_environment(cls, workdir: Path) -> TrackingContext:
        repo_root = paths.repository_root(workdir)
        configured = os.environ.get("MLFLOW_TRACKING_URI")
        return cls(
            repo_root=repo_root,
            tracking_uri=configured or default_tracking_uri(repo_root),
            dvc_experiment=os.environ.get("DVC_EXP_NAME"),
            baseline_commit=os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit(workdir),
            uses_default_store=not configured,
        )

    @property
    def artifact_location(self) -> str | None:
        """Where new experiments keep artifacts: the repository's mlartifacts/ for the default
        store; a tracking server's own choice (e.g. its --artifacts-destination) otherwise."""
        if not self.uses_default_store:
            return None
        return (self.repo_root / paths.MLFLOW_ARTIFACT_DIR).as_uri()


def default_tracking_uri(repo_root: Path) -> str:
    return f"sqlite:///{repo_root / paths.MLFLOW_DB_FILE}"


def _git_commit(directory: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip() or None


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"learning_rate": 0.001}} -> {"train.learning_rate": "0.001"}.

    MLflow's log_params does not flatten nested mappings itself.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@contextlib.contextmanager
def _exclusive(context: TrackingContext) -> Iterator[None]:
    """Hold a lock beside the default SQLite store while creating it or an experiment in it:
    several stages starting at once (`dvc queue start -j 2`) otherwise race on MLflow's schema
    migration ("duplicate column name") and on creating the experiment. A server needs none."""
    if not context.uses_default_store:
        yield
        return
    lock_file = context.repo_root / f"{paths.MLFLOW_DB_FILE}.lock"
    with lock_file.open("a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environment(settings: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_experiment(context: TrackingContext, experiment_name: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating either if need be.

    Fails fast, with one line naming the store, where it cannot be reached or written (a
    server down, a wrong password, a folder that does not exist): before any training."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(context.tracking_uri)
    try:
        with _environment(PREFLIGHT_HTTP_SETTINGS), _exclusive(context):
            client = mlflow.MlflowClient()  # creates and migrates a new SQLite store
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:
                return str(experiment.experiment_id)
            return str(
                client.create_experiment(
                    experiment_name,
                    artifact_location=context.artifact_location,
                    tags=EXPERIMENT_KIND_TAG,
                )
            )
    except MlflowException as error:
        if error.error_code == "RESOURCE_ALREADY_EXISTS":  # another process just created it
            experiment = mlflow.MlflowClient().get_experiment_by_name(experiment_name)
            if experiment is not None:
                return str(experiment.experiment_id)
        raise UserError(store_problem(context, error)) from None
    except Exception as error:  # connection refused, unwritable folder, bad URI scheme...
        raise UserError(store_problem(context, error)) from None


def store_problem(context: TrackingContext, error: BaseException) -> str:
    """One line: what went wrong with the store, and what to do."""
    message = first_line(error)
    if not context.uses_default_store:
        if "401" in message or "Unauthorized" in message or "credentials" in message.lower():
            return (
                f"the MLflow server at {context.tracking_uri} refused the credentials "
                f"(MLFLOW_TRACKING_USERNAME={os.environ.get('MLFLOW_TRACKING_USERNAME', '')!r}): "
                f"{message}; check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        return (
            f"MLflow cannot record the run in {context.tracking_uri}: {message}; start the "
            "server, or fix or unset MLFLOW_TRACKING_URI"
        )
    return f"MLflow cannot record the run in {context.tracking_uri}: {message}"


@dataclass(frozen=True)
class RunDescription:
    """What the train stage's run is called, tagged with and logs as params."""

    name: str
    tags: dict[str, str]
    params: dict[str, Any]  # nested sections of params.yaml; logged flattened


def describe_training(
    context: TrackingContext, params: dict[str, Any], dataset: str, changed: dict[str, str]
) -> RunDescription:
    """The run is named after the DVC experiment or, outside one, after the network, the
    dataset and the params that differ from conf/'s defaults (`changed`), so that runs with
    different learning rates are told apart in `mlflow ui`'s runs table."""
    model_name = str(params["model"]["name"])
    tags = {"dataset": dataset, "model": model_name}
    if changed:
        tags["params_changed"] = " ".join(f"{key}={value}" for key, value in changed.items())
    if context.baseline_commit:
        tags["mlflow.source.git.commit"] = context.baseline_commit
    if context.dvc_experiment:
        tags["dvc.experiment"] = context.dvc_experiment
    name = context.dvc_experiment or f"{model_name}-{dataset}"
    if not context.dvc_experiment and changed:
        name = f"{name} {tags['params_changed']}"[:250]
    return RunDescription(name, tags, params)


def start_run(experiment_id: str, description: RunDescription) -> str:
    """Start the train stage's run (the active run of this process); return its id."""
    import mlflow

    run = mlflow.start_run(
        experiment_id=experiment_id, run_name=description.name, tags=description.tags
    )
    mlflow.log_params(flatten_params(description.params))
    return str(run.info.run_id)


def log_datasets(name: str, splits: Mapping[str, tuple[Any, Any, str]]) -> None:
    """Log each split as a dataset input of the active run: `mlflow ui`'s Dataset column and
    run comparison then show what each model was trained and tested on. `splits` maps the
    split's name (the input's context) to (images, labels, the file it was read from);
    MLflow takes a digest of the arrays themselves."""
    import warnings

    import mlflow
    from mlflow.data.numpy_dataset import from_numpy

    for split, (images, labels, source) in splits.items():
        with warnings.catch_warnings():  # a local path could name several kinds of source
            warnings.filterwarnings("ignore", message="The specified dataset source")
            dataset = from_numpy(images, targets=labels, name=name, source=source)
        mlflow.log_input(dataset, context=split)


def set_tags(tags: Mapping[str, str]) -> None:
    import mlflow

    mlflow.set_tags(dict(tags))


def continue_run(run_id: str) -> bool:
    """Make the run of an interrupted training the active run again; False where the store
    no longer has it (deleted mlflow.db, another MLFLOW_TRACKING_URI)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.start_run(run_id=run_id)
    except MlflowException:
        return False
    return True


def mark_killed(run_ids: list[str]) -> None:
    """End runs that are still RUNNING in the store but whose training was killed: nothing
    is ever left RUNNING (a resume sets its run RUNNING again)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    for run_id in run_ids:
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
        except MlflowException:
            continue  # not in this store


def logged_steps(run_id: str, metric: str) -> set[int]:
    import mlflow

    return {entry.step for entry in mlflow.MlflowClient().get_metric_history(run_id, metric)}


def end_run(status: str) -> None:
    """End the active run: FINISHED, FAILED, or KILLED (interrupted; resumable)."""
    import mlflow

    mlflow.end_run(status=status)


def log_to_run(
    run_id: str,
    context: TrackingContext,
    metrics: Mapping[str, float],
    artifacts: list[Path],
    artifact_path: str,
) -> bool:
    """Add metrics and files to an existing run (the one train created).

    Returns False, with a warning, where the store no longer has that run (deleted
    mlflow.db, another MLFLOW_TRACKING_URI): the stage's own files are still written.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(context.tracking_uri)
    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        logger.warning(
            "MLflow run %s is not in %s (was the store deleted?); results were not logged to "
            "MLflow. `dvc repro -f train` starts a new run",
            run_id,
            context.tracking_uri,
        )
        return False
    client.log_batch(
        run_id, metrics=[mlflow.entities.Metric(k, float(v), _now(), 0) for k, v in metrics.items()]
    )
    for path in artifacts:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    return True


def _now() -> int:
    import time

    return int(time.time() * 1000)


def read_run_id(run_file: Path) -> str:
    import json

    if not run_file.is_file():
        raise UserError(f"{run_file} is missing: run `dvc repro train` first")
    run_id: str = json.loads(run_file.read_text(encoding="utf-8"))["run_id"]
    return run_id
