"""The train stage's MLflow run, and what the later stages add to it, through MLflow's public
API: named and tagged so that runs can be told apart, continued after an interruption, never
left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_pipeline.errors import TrainingInterrupted, UserError
from cnn_pipeline.tracking.store import TrackingContext

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunDescription:
    """What the train stage's run is called, tagged with and logs as params."""

    name: str
    tags: dict[str, str]
    params: dict[str, Any]  # nested sections of params.yaml; logged flattened


def describe_training(
    context: TrackingContext, params: dict[str, Any], dataset: str, changed: dict[str, str]
) -> RunDescription:
    """The run is named after the DVC experiment (under `dvc exp run`) or else after the
    network and the dataset, followed by what the params change from the commit's
    params.yaml (`changed`, from compose.describe_changes: `model=lenet5
    train.learning_rate=0.003`), so that the runs of a sweep are told apart in `mlflow ui`'s
    runs table."""
    model_name = str(params["model"]["name"])
    tags = {"dataset": dataset, "model": model_name}
    if changed:
        tags["params_changed"] = " ".join(f"{key}={value}" for key, value in changed.items())
    if context.baseline_commit:
        tags["mlflow.source.git.commit"] = context.baseline_commit
    # The commit plus these files is what ran; `git diff` on them shows how it differs.
    tags["workspace_modified"] = str(bool(context.modified_files)).lower()
    if context.modified_files:
        tags["workspace_changes"] = " ".join(context.modified_files)[:5000]
    if context.dvc_experiment:
        tags["dvc.experiment"] = context.dvc_experiment
    name = context.dvc_experiment or f"{model_name}-{dataset}"
    if changed:
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


class TrainingRun:
    """The train stage's run while it is the active run; `finish` ends it as FINISHED."""

    def __init__(self, run_id: str, resumed: bool) -> None:
        self.run_id = run_id
        self.resumed = resumed  # an interrupted training's run, continued
        self.ended = False

    def end(self, status: str) -> None:
        """End the run: FINISHED, FAILED, or KILLED (interrupted; resumable). Once only."""
        import mlflow

        if not self.ended:
            mlflow.end_run(status=status)
            self.ended = True

    def finish(self) -> None:
        self.end("FINISHED")


@contextlib.contextmanager
def training_run(
    experiment_id: str, description: RunDescription, interrupted_run_id: str | None
) -> Iterator[TrainingRun]:
    """The one place where the train stage's MLflow run starts, continues and ends.

    The run of an interrupted training (`interrupted_run_id`) is continued where the store
    still has it; otherwise a new run of `experiment_id` starts. When the block ends, the run
    ends: FINISHED (or earlier, where the block calls `finish`), KILLED when Ctrl-C or `kill`
    interrupted it (the next `dvc repro` continues it), FAILED on any other error. Nothing is
    left RUNNING.
    """
    if interrupted_run_id is not None and continue_run(interrupted_run_id):
        run = TrainingRun(interrupted_run_id, resumed=True)
    else:
        run = TrainingRun(start_run(experiment_id, description), resumed=False)
    try:
        yield run
    except (KeyboardInterrupt, TrainingInterrupted):
        run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    run.finish()


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
