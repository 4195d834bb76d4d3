"""MLflow tracking: where runs are stored, how params are flattened, per-epoch metric logging.

The default store is `mlflow.db` (SQLite) plus `mlartifacts/` at the repository root, both
addressed absolutely: `dvc exp run --queue` runs stages in a temporary copy of the repository,
and a relative path there would lose the run. `MLFLOW_TRACKING_URI` overrides the store.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_pipeline import paths

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
        repo_root = Path(os.environ.get("DVC_ROOT") or workdir).resolve()
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
