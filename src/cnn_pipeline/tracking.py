"""MLflow tracking: where runs are stored, how params are flattened, per-epoch metric logging.

The default store is `mlflow.db` (SQLite) plus `mlartifacts/` at the repository root, both
addressed absolutely: `dvc exp run --queue` runs stages in a temporary copy of the repository,
and a relative path there would lose the run. `MLFLOW_TRACKING_URI` overrides the store.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cnn_pipeline import paths
from cnn_pipeline.errors import UserError

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


class BackgroundRun:
    """An MLflow run that is logged to from a thread of its own, so training does not wait
    for MLflow's calls: importing it (1.3 s here), opening the store (1.2 s; more the first
    time, when the SQLite schema is created), per-epoch metrics (~30 ms each on SQLite) and
    the model's registration overlap with training. Their CPU time is still spent: on 2
    cores it slows training (benchmarks/mlflow_overhead.py measures the whole cost).

    Every MLflow call happens on that one thread (MLflow keeps the active run per thread),
    in the order it was asked for. Leaving the `with` block waits for all of them and
    raises the first error; leaving it on an exception marks the run FAILED.

        with BackgroundRun(context, "experiment", "run name", tags, params) as run:
            run.log_metrics({"loss": 0.3}, step=1)
            run.call(lambda mlflow: mlflow.keras.log_model(...))
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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow")
        self._pending: list[Future[None]] = []
        self._started: Future[tuple[str, str]] = self._executor.submit(
            self._start, context, experiment_name, run_name, dict(tags), dict(params)
        )

    @staticmethod
    def _start(
        context: TrackingContext,
        experiment_name: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
    ) -> tuple[str, str]:
        import mlflow
        import mlflow.keras  # imported here, off the training thread, for log_model later
        import mlflow.models.signature  # and infer_signature, for the same

        mlflow.set_tracking_uri(context.tracking_uri)
        try:
            experiment = experiment_id(mlflow.MlflowClient(), experiment_name, context)
            run = mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags)
        except Exception as error:
            raise UserError(
                f"MLflow cannot record the run in {context.tracking_uri}: "
                f"{str(error).splitlines()[0]}; fix or unset MLFLOW_TRACKING_URI"
            ) from error
        mlflow.log_params(params)
        return run.info.run_id, experiment

    def call(self, action: Callable[[Any], object]) -> None:
        """Run `action(mlflow)` on the logging thread, inside the run, after what came before."""

        def in_run() -> None:
            self._started.result()  # the run exists (or its error is raised again)
            import mlflow

            action(mlflow)

        self._pending.append(self._executor.submit(in_run))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """All values in one call (one call per value costs ~11 ms each on SQLite)."""
        values = {key: float(value) for key, value in metrics.items()}
        self.call(lambda mlflow: mlflow.log_metrics(values, step=step))

    def raise_if_failed(self) -> None:
        """Raise, now, an error the logging thread has met so far (training can stop early
        rather than finish for a run that cannot be recorded)."""
        futures: list[Future[Any]] = [self._started, *self._pending]
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                future.result()

    @property
    def ids(self) -> tuple[str, str]:
        """(run id, experiment id), once the run has started: waits for that if need be."""
        return self._started.result()

    def __enter__(self) -> BackgroundRun:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Wait for everything asked for and end the run (FAILED if the block raised);
        raise the first error the logging thread met."""
        try:
            if error is None:
                self._started.result()
                for future in self._pending:
                    future.result()
                self._executor.submit(_end_run, "FINISHED").result()
            else:
                for future in self._pending:
                    future.cancel()
                try:
                    self._executor.submit(_end_run, "FAILED").result()
                except Exception as end_error:  # keep the block's own error the one raised
                    logger.warning("could not mark MLflow run as failed: %s", end_error)
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _end_run(status: str) -> None:
    import mlflow

    if mlflow.active_run() is not None:
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
