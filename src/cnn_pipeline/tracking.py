"""MLflow tracking: where runs are stored, how params are flattened, per-epoch metric logging.

The default store is `mlflow.db` (SQLite) plus `mlartifacts/` at the repository root, both
addressed absolutely: `dvc exp run --queue` runs stages in a temporary copy of the repository,
and a relative path there would lose the run. `MLFLOW_TRACKING_URI` overrides the store.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from cnn_pipeline import keras_flavor, paths
from cnn_pipeline.errors import UserError, first_line

logger = logging.getLogger(__name__)

# `mlflow ui` reads this experiment tag to open the runs table (model training) by default.
EXPERIMENT_KIND_TAG = {"mlflow.experimentKind": "custom_model_development"}


@dataclass(frozen=True)
class TrackingContext:
    """What the environment says about where and how this stage runs."""

    repo_root: Path  # the real repository, also when DVC runs the stage in a temporary copy
    tracking_uri: str
    dvc_experiment: str | None  # set by `dvc exp run`
    baseline_commit: str | None

    @classmethod
    def from_environment(cls, workdir: Path) -> TrackingContext:
        repo_root = paths.repository_root(workdir)
        default_uri = f"sqlite:///{repo_root / paths.MLFLOW_DB_FILE}"
        return cls(
            repo_root=repo_root,
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or default_uri,
            dvc_experiment=os.environ.get("DVC_EXP_NAME"),
            baseline_commit=os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit(workdir),
        )

    @property
    def artifact_location(self) -> str:
        return (self.repo_root / paths.MLFLOW_ARTIFACT_DIR).as_uri()


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


def experiment_id(client: Any, experiment_name: str, context: TrackingContext) -> str:
    """The id of the named experiment, created with an absolute artifact location if new."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(
        client.create_experiment(
            experiment_name, artifact_location=context.artifact_location, tags=EXPERIMENT_KIND_TAG
        )
    )


def training_run(
    context: TrackingContext,
    experiment_name: str,
    model_name: str,
    dataset_name: str,
    params: Mapping[str, Any],
) -> BackgroundRun:
    """The train stage's run, named after the DVC experiment (or model-dataset), tagged with
    the dataset, the model, the commit and the DVC experiment; `params` logged flattened."""
    tags = {"dataset": dataset_name, "model": model_name}
    if context.baseline_commit:
        tags["mlflow.source.git.commit"] = context.baseline_commit
    if context.dvc_experiment:
        tags["dvc.experiment"] = context.dvc_experiment
    run_name = context.dvc_experiment or f"{model_name}-{dataset_name}"
    return BackgroundRun(context, experiment_name, run_name, tags, flatten_params(params))


class BackgroundRun:
    """An MLflow run recorded by a process of its own, so that training does not wait for
    MLflow: importing it (1.3 s here) and its SQLite store (1.2 s), creating the run,
    per-epoch metrics and the model's logging and registration all happen in that process.
    Started before TensorFlow is imported, it does its imports on the core that TensorFlow's
    single-threaded import leaves idle. (A thread would not do: imports hold Python's GIL.)
    It never imports Keras or TensorFlow: it logs the model from the file training saved
    (`keras_flavor`), so where training keeps every core busy it takes little from it.

    The process is started with "spawn", so a script that calls this must guard its own
    top level with `if __name__ == "__main__":` (as any script using multiprocessing must).

    Calls are sent in order and return at once. A failure in the recording process is raised
    in this one by the next call of `raise_if_failed` or on leaving the `with` block, which
    waits for everything sent to be recorded and ends the run (FAILED if the block raised).
    The run starts when the object is made, so it can start before the `with` block.

        with BackgroundRun(context, "experiment", "run name", tags, params) as run:
            run.log_metrics({"loss": 0.3}, step=1)
            run.log_keras_model(LoggedKerasModel(Path("model.keras"), ...))
        run_id, experiment_id = run.ids
    """

    def __init__(
        self,
        context: TrackingContext,
        experiment_name: str,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
    ) -> None:
        # "spawn": a fresh interpreter, never a fork of one whose TensorFlow runs threads.
        spawn = multiprocessing.get_context("spawn")
        self._connection, child_connection = spawn.Pipe()
        self._uri = context.tracking_uri
        self._process = spawn.Process(
            target=_record,
            args=(child_connection, context, experiment_name, run_name, dict(tags), dict(params)),
            name="mlflow-recorder",
            daemon=True,
        )
        self._process.start()
        child_connection.close()
        self._ids: tuple[str, str] | None = None
        self._failure: str | None = None
        self._ended = False

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._send("set_tags", dict(tags))

    def log_params(self, params: Mapping[str, str]) -> None:
        self._send("log_params", dict(params))

    def log_dict(self, document: dict[str, Any], artifact_file: str) -> None:
        self._send("log_dict", (document, artifact_file))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """All values in one call (one call per value costs ~11 ms each on SQLite)."""
        self._send("log_metrics", ({key: float(value) for key, value in metrics.items()}, step))

    def log_keras_model(self, model: LoggedKerasModel) -> None:
        """Log (and register) the model saved at `model.path`: the recording process copies
        that file, so the model must not change there until the run has ended."""
        self._send("log_keras_model", model)

    def raise_if_failed(self) -> None:
        """Raise, now, an error the recording process has met so far (training can stop early
        rather than finish for a run that cannot be recorded)."""
        while self._failure is None and self._connection.poll():
            self._receive()
        if self._failure is not None:
            raise UserError(self._failure)

    @property
    def ids(self) -> tuple[str, str]:
        """(run id, experiment id), once the run has started: waits for that if need be."""
        while self._ids is None:
            self.raise_if_failed()
            self._receive()
        return self._ids

    def _send(self, kind: str, payload: Any) -> None:
        if self._failure is not None:  # the recording process now only waits for the end
            return
        try:
            self._connection.send((kind, payload))
        except OSError:
            self._stopped()

    def _receive(self) -> None:
        try:
            kind, payload = self._connection.recv()
        except (EOFError, OSError):
            self._stopped()
            return
        if kind == "started":
            self._ids = payload
        elif kind == "failed":
            self._failure = self._failure or payload
        elif kind == "ended":
            self._ended = True

    def _stopped(self) -> None:
        self._process.join(timeout=5)
        self._failure = self._failure or (
            f"MLflow's recording process stopped (exit code {self._process.exitcode}) before "
            f"the run in {self._uri} was complete; see the messages above"
        )
        self._ended = True

    def __enter__(self) -> BackgroundRun:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Wait for everything sent to be recorded and end the run (FAILED if the block
        raised); raise the first error the recording process met. Does nothing the second
        time."""
        if self._connection.closed:
            return
        try:
            if not self._ended:
                try:
                    self._connection.send(("end", "FINISHED" if error is None else "FAILED"))
                except OSError:
                    self._stopped()
            while not self._ended:
                self._receive()
        finally:
            self._connection.close()
            if not self._ended:  # interrupted while waiting: stop it
                self._process.kill()
            # Otherwise the run is complete; the process's own shutdown (MLflow's teardown
            # and telemetry flush) is not waited for. As a daemon it is stopped, if still
            # there, when this process exits.
        if error is None and self._failure is not None:
            raise UserError(self._failure)


@dataclass(frozen=True)
class LoggedKerasModel:
    """What `BackgroundRun.log_keras_model` logs: a saved .keras file, the Keras version and
    backend that saved it, a few sample inputs and the model's outputs for them (MLflow
    infers the model's signature from these), the registered model it becomes a new version
    of, metadata, and its pip requirements."""

    path: Path
    keras_version: str
    keras_backend: str
    sample_inputs: np.ndarray
    sample_outputs: np.ndarray
    registered_model_name: str
    metadata: dict[str, Any]
    pip_requirements: list[str]


def _record(
    connection: Connection,
    context: TrackingContext,
    experiment_name: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
) -> None:
    """The recording process: start the run, then carry out each request in order."""
    try:
        import mlflow

        mlflow.set_tracking_uri(context.tracking_uri)
        experiment = experiment_id(mlflow.MlflowClient(), experiment_name, context)
        run = mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags)
        mlflow.log_params(params)
    except Exception as error:
        connection.send(
            (
                "failed",
                f"MLflow cannot record the run in {context.tracking_uri}: "
                f"{first_line(error)}; fix or unset MLFLOW_TRACKING_URI",
            )
        )
        _wait_for_end(connection)
        _send_quietly(connection, ("ended", None))
        return
    connection.send(("started", (run.info.run_id, experiment)))
    try:
        _warm_up_model_logging(mlflow)
    except Exception:  # only a head start: logging the trained model may still work
        logger.warning("MLflow: warming up model logging failed", exc_info=True)

    status = "FAILED"  # unless the training process ends the run otherwise
    while True:
        try:
            kind, payload = connection.recv()
        except EOFError:  # the training process has died
            break
        if kind == "end":
            status = payload
            break
        try:
            _carry_out(mlflow, kind, payload)
        except Exception as error:
            logger.exception("MLflow: %s failed", kind)
            connection.send(
                (
                    "failed",
                    f"MLflow could not {kind.replace('_', ' ')} in {context.tracking_uri}: "
                    f"{first_line(error)}",
                )
            )
            _wait_for_end(connection)
            break
    try:
        mlflow.end_run(status=status)
    finally:
        _send_quietly(connection, ("ended", None))


def _warm_up_model_logging(mlflow: Any) -> None:
    """Write a model's files once, now, while training runs: the first time, MLflow indexes
    every installed package to check the pip requirements (over 1 s here), and the train
    stage would wait for that at its end. The "model" is an empty file: nothing loads it."""
    import tempfile

    import mlflow.models

    sample = np.zeros((1, 1), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="cnn-pipeline-warm-up-") as directory:
        empty = Path(directory) / "empty.keras"
        empty.touch()
        keras_flavor.save_model(
            Path(directory) / "model",
            keras_file=empty,
            keras_version="",
            keras_backend="",
            signature=mlflow.models.infer_signature(sample, sample),
            pip_requirements=["keras"],
        )


def _carry_out(mlflow: Any, kind: str, payload: Any) -> None:
    if kind == "set_tags":
        mlflow.set_tags(payload)
    elif kind == "log_params":
        mlflow.log_params(payload)
    elif kind == "log_dict":
        document, artifact_file = payload
        mlflow.log_dict(document, artifact_file)
    elif kind == "log_metrics":
        metrics, step = payload
        mlflow.log_metrics(metrics, step=step)
    elif kind == "log_keras_model":
        model: LoggedKerasModel = payload
        keras_flavor.log_model(
            model.path,
            keras_version=model.keras_version,
            keras_backend=model.keras_backend,
            signature=mlflow.models.infer_signature(model.sample_inputs, model.sample_outputs),
            registered_model_name=model.registered_model_name,
            metadata=model.metadata,
            pip_requirements=model.pip_requirements,
        )
    else:
        raise ValueError(f"unknown request {kind!r}")


def _wait_for_end(connection: Connection) -> None:
    """Drop requests until the training process ends the run (or dies)."""
    while True:
        try:
            kind, _ = connection.recv()
        except EOFError:
            return
        if kind == "end":
            return


def _send_quietly(connection: Connection, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the training process has gone: nobody listens
        connection.send(message)


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
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        logger.warning(
            "MLflow run %s is not in %s (was the store deleted?); results were not logged to "
            "MLflow. `dvc repro -f train` starts a new run",
            run_id,
            context.tracking_uri,
        )
        return False
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(dict(metrics))
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
    return True


def read_run_id(run_file: Path) -> str:
    import json

    from cnn_pipeline.errors import UserError

    if not run_file.is_file():
        raise UserError(f"{run_file} is missing: run `dvc repro train` first")
    run_id: str = json.loads(run_file.read_text(encoding="utf-8"))["run_id"]
    return run_id
