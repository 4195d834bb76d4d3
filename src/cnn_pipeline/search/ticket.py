"""The ticket of a queued trial: a small JSON file, named after the trial's DVC experiment,
that `cnn-pipeline tune` writes under the repository's .optuna/trials/ before it queues the
experiment, and removes once the trial is told. The train stage (cli.py) looks for the ticket
of DVC_EXP_NAME: without one (`dvc repro`, a plain `dvc exp run`) nothing of the search runs
and Optuna is not imported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cnn_pipeline import paths
from cnn_pipeline.atomic import atomic_path

PRUNED_TAG = "search.pruned"  # "true" on the MLflow run of a pruned trial
PRUNED_AT_ATTRIBUTE = "pruned_at_epoch"  # the Optuna trial's user attribute, set when pruned


@dataclass(frozen=True)
class TrialTicket:
    storage: str  # the Optuna storage URL (it may hold a password: the file is private)
    study: str
    trial_number: int
    metric: str  # reported after every epoch, e.g. val_accuracy
    parent_run_id: str | None  # the search's MLflow run, parent of the trial's run
    run_name: str  # the trial's MLflow run: the search, the trial and the values it tries


def ticket_file(repo_root: Path, experiment: str) -> Path:
    return repo_root / paths.TRIAL_TICKET_DIR / f"{experiment}.json"


def write_ticket(repo_root: Path, experiment: str, ticket: TrialTicket) -> None:
    file = ticket_file(repo_root, experiment)
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(file) as staged:
        staged.touch(mode=0o600)
        staged.write_text(json.dumps(asdict(ticket)), encoding="utf-8")


def read_ticket(repo_root: Path, experiment: str | None) -> TrialTicket | None:
    """The ticket of this DVC experiment, if a search queued it."""
    if not experiment:
        return None
    file = ticket_file(repo_root, experiment)
    if not file.is_file():
        return None
    return TrialTicket(**json.loads(file.read_text(encoding="utf-8")))


def remove_ticket(repo_root: Path, experiment: str) -> None:
    ticket_file(repo_root, experiment).unlink(missing_ok=True)
