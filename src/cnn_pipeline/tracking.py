"""MLflow tracking: where runs are stored, how params are flattened, per-epoch metric logging.

The default store is `mlflow.db` (SQLite) plus `mlartifacts/` at the repository root, both
addressed absolutely: `dvc exp run --queue` runs stages in a temporary copy of the repository,
and a relative path there would lose the run. `MLFLOW_TRACKING_URI` overrides the store.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_pipeline import paths

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
