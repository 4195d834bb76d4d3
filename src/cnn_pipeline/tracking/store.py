"""Where MLflow runs are stored, and opening that store safely before any training.

The default store is `mlflow.db` (SQLite) plus `mlartifacts/` at the repository root, both
addressed absolutely: `dvc exp run --queue` runs stages in a temporary copy of the repository,
and a relative path there would lose the run. `MLFLOW_TRACKING_URI` points elsewhere, e.g. at
a team's `mlflow server`, which then decides where artifacts go.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cnn_pipeline import paths
from cnn_pipeline.errors import UserError, first_line

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
    # Source files that differ from the commit (hand-edited params.yaml, code): the commit
    # alone does not say what ran. DVC's own records and outputs are left out.
    modified_files: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, workdir: Path) -> TrackingContext:
        repo_root = paths.repository_root(workdir)
        configured = os.environ.get("MLFLOW_TRACKING_URI")
        return cls(
            repo_root=repo_root,
            tracking_uri=configured or default_tracking_uri(repo_root),
            dvc_experiment=os.environ.get("DVC_EXP_NAME"),
            baseline_commit=os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit(workdir),
            modified_files=modified_files(workdir),
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


def modified_files(directory: Path) -> tuple[str, ...]:
    """Tracked files that differ from HEAD: the sources (code, conf/, params.yaml, dvc.yaml).
    What the pipeline writes itself never counts: DVC's lock file, which DVC updates after each
    stage, and every output dvc.yaml declares (DVC deletes an output before its stage runs, so
    a committed `cache: false` output shows as changed in a clean clone's training)."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--no-renames"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ()
    outputs = (*pipeline_outputs(directory / "dvc.yaml"), "dvc.lock")
    changed = (line[3:].strip().strip('"') for line in result.stdout.splitlines() if len(line) > 3)
    return tuple(
        path
        for path in changed
        if not any(path == output or path.startswith(f"{output}/") for output in outputs)
    )


def pipeline_outputs(dvc_file: Path) -> list[str]:
    """The paths dvc.yaml's stages write (outs, metrics, plots), relative to the repository."""
    import yaml

    try:
        pipeline = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    outputs: list[str] = []
    for stage in (pipeline.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                # An entry is a path, or {path: {cache: false, ...}}.
                names = entry if isinstance(entry, dict) else [entry]
                outputs.extend(str(name).rstrip("/") for name in names)
    return outputs


def _git_commit(directory: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip() or None


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
        # The status code 401, not the digits of a port such as 40169 in the server's address.
        status = re.sub(r"https?://\S+", "", message)
        if (
            re.search(r"\b401\b", status)
            or "Unauthorized" in message
            or "credentials" in status.lower()
        ):
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
