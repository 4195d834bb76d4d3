"""The search: Optuna asks for values, each trial runs as a queued DVC experiment (the whole
pipeline), `-j` at a time, and its validation metric is told back to the study.

The study lives in a database (a SQLite file in .optuna/ by default, or a team's database),
so that running the same command again continues it, and several machines can share it.
Each trial's train stage finds its trial through a ticket (ticket.py) and reports every epoch
to it (pruning.py). One MLflow run stands for the search: every trial's run is its child.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_pipeline import paths
from cnn_pipeline.errors import TrainingInterrupted, UserError, first_line
from cnn_pipeline.search.space import Categorical, SearchConfig, override_value, space_description
from cnn_pipeline.search.storage import (
    STORAGE_VARIABLE,
    make_pruner,
    open_storage,
    without_password,
)
from cnn_pipeline.search.ticket import (
    PRUNED_AT_ATTRIBUTE,
    TrialTicket,
    remove_ticket,
    write_ticket,
)

logger = logging.getLogger(__name__)

POLL_SECONDS = 3.0  # how often `dvc queue status` is asked while trials run
STOP_SECONDS = 120.0  # how long a stopped trial may take to end before it is killed outright
RETRY_ATTRIBUTE = "retry_of"  # the number of the stopped trial whose values a trial tries again
ACTIVE = ("Queued", "Running")  # queue states of an experiment that has not ended
ENDED = ("Success", "Failed")  # ...and of one that has
FAILURES_TO_GIVE_UP = 3  # trials failing one after another: the pipeline itself is broken
HOST_ATTRIBUTE = "host"  # where the search that runs a trial runs: "host pid"


def storage_url(repo_root: Path, given: str | None) -> str:
    """--storage, else $CNN_PIPELINE_SEARCH_STORAGE, else .optuna/search.db in the repository."""
    return (
        given or os.environ.get(STORAGE_VARIABLE) or f"sqlite:///{repo_root / paths.SEARCH_DB_FILE}"
    )


Asked = tuple[int, str, dict[str, Any]]  # a trial: its number, experiment and values


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    experiment: str
    state: str  # COMPLETE, PRUNED, FAIL
    values: dict[str, Any]
    value: float | None
    epochs: int | None
    test_metrics: dict[str, float] = field(default_factory=dict)
    here: bool = True  # its experiment is in this repository (not run by another machine)


@dataclass(frozen=True)
class SearchSummary:
    study: str
    trials: list[TrialOutcome]
    best: TrialOutcome | None
    parent_run_id: str | None


def experiment_name(study: str, number: int) -> str:
    return f"{study}-{number}"


def _dvc_environment() -> dict[str, str]:
    """This environment's bin/ first on PATH: the queue's workers start `dvc`, and the stages
    `cnn-pipeline`, from PATH, also where the environment was never activated."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return environment


def _dvc(repo_root: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["dvc", *arguments], cwd=repo_root, env=_dvc_environment(), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise UserError(
            f"`dvc {' '.join(arguments)}` failed: "
            f"{first_line(RuntimeError(result.stderr or result.stdout))}"
        )
    return result


def _start_workers(repo_root: Path, jobs: int) -> None:
    """`dvc queue start -j JOBS`. Its workers outlive it and keep whatever output it was
    given open: a captured pipe would never close, so they write to the queue's own logs."""
    started = subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=repo_root,
        env=_dvc_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if started.returncode != 0:
        raise UserError(f"`dvc queue start -j {jobs}` failed (exit {started.returncode})")


def _stop_experiments(repo_root: Path, names: list[str]) -> None:
    """Stop these queued experiments as Ctrl-C stops a training (`dvc queue kill` sends it
    SIGINT), wait for them to end, and remove them from the queue."""
    running = [name for name in names if queue_states(repo_root).get(name) == "Running"]
    if running:
        _dvc(repo_root, "queue", "kill", *running, check=False)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            states = queue_states(repo_root)
            if all(states.get(name) not in ACTIVE for name in running):
                break
            time.sleep(POLL_SECONDS)
        else:
            _dvc(repo_root, "queue", "kill", "--force", *running, check=False)
    _dvc(repo_root, "queue", "remove", *names, check=False)


def queue_states(repo_root: Path) -> dict[str, str]:
    """Each queued experiment's name and state (Queued, Running, Success, Failed)."""
    states = {}
    for line in _dvc(repo_root, "queue", "status").stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 4 and not line.startswith("Worker status"):
            states[columns[1]] = columns[-1]
    return states


def experiment_metrics(repo_root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{experiment name: {metrics file: its values}} for the experiments `dvc exp show` lists."""
    shown = json.loads(_dvc(repo_root, "exp", "show", "--json").stdout or "[]")
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                name = revision.get("name") or experiment.get("name")
                data = revision.get("data") or {}
                found[name] = {
                    file: content.get("data") or {}
                    for file, content in (data.get("metrics") or {}).items()
                }
    return found


def _optuna_choice(choice: Any) -> Any:
    """Optuna keeps categorical choices as plain values: a list becomes its override text."""
    return override_value(choice) if isinstance(choice, list) else choice


def suggest(trial: Any, search: SearchConfig) -> dict[str, Any]:
    values = {}
    for key, dimension in search.space.items():
        if isinstance(dimension, Categorical):
            choices = [_optuna_choice(choice) for choice in dimension.choices]
            values[key] = trial.suggest_categorical(key, choices)
        elif dimension.type == "float":
            values[key] = trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
        else:
            values[key] = trial.suggest_int(key, dimension.low, dimension.high, log=dimension.log)
    return values


def describe_values(values: dict[str, Any]) -> str:
    """learning_rate=0.00312 batch_size=32 ...: short enough for a run name."""
    shown = []
    for key, value in values.items():
        text = f"{value:.3g}" if isinstance(value, float) else override_value(value)
        shown.append(f"{key.rpartition('.')[2]}={text}")
    return " ".join(shown)


def _host() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _is_alive(host: str) -> bool:
    name, _, pid = host.rpartition(" ")
    if name != socket.gethostname():
        return True  # another machine's search: not ours to judge
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class Search:
    """One `cnn-pipeline tune` run over a study (created, or continued)."""

    def __init__(
        self,
        repo_root: Path,
        search: SearchConfig,
        study_name: str,
        storage: str,
        jobs: int,
        experiment_name_for_mlflow: str,
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.repo_root = repo_root
        self.search = search
        self.study_name = study_name
        self.storage_url = storage
        self.jobs = jobs
        self.storage = open_storage(storage)
        self.study = optuna.create_study(
            study_name=study_name,
            storage=self.storage,
            direction=search.direction,
            load_if_exists=True,
            pruner=make_pruner(search.pruner.model_dump()),
        )
        self._check_same_search()
        self.study.set_user_attr("pruner", search.pruner.model_dump())
        # Seeded by the trials already there: a resumed search does not draw the same values.
        seed = None if search.seed is None else search.seed + len(self.study.trials)
        self.study.sampler = optuna.samplers.TPESampler(seed=seed)
        self.parent_run_id = self._open_parent_run(experiment_name_for_mlflow)
        self.failures_in_a_row = 0

    def _check_same_search(self) -> None:
        described = {
            "metric": self.search.metric,
            "space": space_description(self.search),
            "overrides": self.search.overrides,  # trials of 10 epochs do not compare with 40
        }
        recorded = self.study.user_attrs.get("search")
        if recorded is None:
            self.study.set_user_attr("search", described)
        elif recorded != described:
            raise UserError(
                f"study {self.study_name!r} searched another space, metric or overrides "
                f"({recorded}): "
                "give another --name for this search, or restore the search file"
            )

    def _open_parent_run(self, experiment_name: str) -> str | None:
        import mlflow
        from mlflow.exceptions import MlflowException

        from cnn_pipeline.tracking import store

        context = store.TrackingContext.from_environment(self.repo_root)
        experiment_id = store.open_experiment(context, experiment_name)
        client = mlflow.MlflowClient(context.tracking_uri)
        run_id = self.study.user_attrs.get("mlflow_parent_run_id")
        if run_id is not None:
            try:
                client.update_run(run_id, status="RUNNING")
                return str(run_id)
            except MlflowException:
                logger.warning("the search's MLflow run %s is gone: starting a new one", run_id)
        run = client.create_run(
            experiment_id,
            run_name=self.study_name,
            tags={
                "search.study": self.study_name,
                "search.storage": without_password(self.storage_url),
            },
        )
        params = {f"space.{key}": text for key, text in space_description(self.search).items()}
        params |= {
            "metric": self.search.metric,
            "direction": self.search.direction,
            "pruner": " ".join(f"{k}={v}" for k, v in self.search.pruner.model_dump().items()),
            "overrides": " ".join(self.search.overrides) or "none",
        }
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        self.study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
        return str(run.info.run_id)

    def _end_parent_run(self, status: str, best: TrialOutcome | None) -> None:
        import mlflow

        from cnn_pipeline.tracking import store

        if self.parent_run_id is None:
            return
        context = store.TrackingContext.from_environment(self.repo_root)
        client = mlflow.MlflowClient(context.tracking_uri)
        if best is not None and best.value is not None:
            client.log_metric(self.parent_run_id, f"best_{self.search.metric}", best.value)
            for key, value in best.test_metrics.items():
                client.log_metric(self.parent_run_id, f"best_{key}", value)
            tags = {
                "best_trial": str(best.number),
                "best_experiment": best.experiment,
                "best_values": describe_values(best.values),
            }
            for tag, text in tags.items():
                client.set_tag(self.parent_run_id, tag, text)
        from optuna.trial import TrialState

        states = [trial.state for trial in self.study.trials]
        for state in TrialState:
            client.log_metric(
                self.parent_run_id, f"trials_{state.name.lower()}", states.count(state)
            )
        client.set_terminated(self.parent_run_id, status=status)

    def finished_trials(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def fail_abandoned_trials(self) -> None:
        """Trials left RUNNING by a search of this machine that was killed: failed, their
        experiments stopped, and their values asked again."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(states=(TrialState.RUNNING,)):
            host = trial.user_attrs.get(HOST_ATTRIBUTE, "")
            if _is_alive(host):
                continue
            name = experiment_name(self.study_name, trial.number)
            logger.info("trial %s was left running by a stopped search: asked again", name)
            self._abandon([(trial.number, name, trial.params)])

    def _abandon(self, trials: Sequence[Asked]) -> None:
        from optuna.trial import TrialState

        names = [name for _, name, _ in trials]
        if names:
            _stop_experiments(self.repo_root, names)
        for number, name, values in trials:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            self.study.enqueue_trial(values, user_attrs={RETRY_ATTRIBUTE: number})
            remove_ticket(self.repo_root, name)

    def run(self, trials: int, timeout: float | None) -> SearchSummary:
        """Keep `jobs` trials running until `trials` have finished (or the time is up): a new
        trial is asked as soon as one ends, so a pruned trial frees its worker at once."""
        started = time.monotonic()
        self.fail_abandoned_trials()
        running: list[Asked] = []
        try:
            while True:
                in_time = timeout is None or time.monotonic() - started < timeout
                wanted = trials - self.finished_trials() - len(running) if in_time else 0
                asked = [
                    self._ask_and_queue() for _ in range(min(wanted, self.jobs - len(running)))
                ]
                if asked:
                    _start_workers(self.repo_root, self.jobs)
                running += asked
                if not running:
                    break
                states = self._wait_for_one([name for _, name, _ in running])
                ended = [trial for trial in running if states.get(trial[1]) not in ACTIVE]
                self._tell(ended, states)
                running = [trial for trial in running if trial not in ended]
                if self.failures_in_a_row >= FAILURES_TO_GIVE_UP:
                    raise UserError(
                        f"the last {self.failures_in_a_row} trials failed, the search stops: "
                        f"`dvc queue logs {ended[-1][1]}` says why"
                    )
            if timeout is not None and self.finished_trials() < trials:
                logger.info("time budget of %g s spent: no new trial started", timeout)
        except BaseException as error:
            # Ctrl-C (or a failure) while trials run: those that ended are told as usual;
            # the others are stopped and their values asked again by the next search.
            states = queue_states(self.repo_root)
            ended = [trial for trial in running if states.get(trial[1]) in ENDED]
            self._abandon([trial for trial in running if trial not in ended])
            self._tell(ended, states)
            self._end_parent_run("KILLED", None)
            if isinstance(error, KeyboardInterrupt):
                raise TrainingInterrupted(
                    f"search {self.study_name!r} interrupted after {self.finished_trials()} "
                    f"finished trials: run the same command to continue it"
                ) from None
            raise
        summary = self.summary()
        self._end_parent_run("FINISHED", summary.best)
        return summary

    def _ask_and_queue(self) -> Asked:
        trial = self.study.ask()
        values = suggest(trial, self.search)
        name = experiment_name(self.study_name, trial.number)
        trial.set_user_attr(HOST_ATTRIBUTE, _host())
        trial.set_user_attr("experiment", name)
        try:
            self._queue(trial.number, name, values)
        except BaseException:
            self._abandon([(trial.number, name, values)])
            raise
        return trial.number, name, values

    def _tell(self, asked: list[Asked], states: dict[str, str]) -> None:
        from optuna.trial import TrialState

        if not asked:
            return
        results = experiment_metrics(self.repo_root)
        for number, name, values in asked:
            remove_ticket(self.repo_root, name)
            metrics = results.get(name, {}).get(str(paths.TRAIN_METRICS_FILE), {})
            value = metrics.get(self.search.metric)
            pruned_at = self.study.get_trials(deepcopy=False)[number].user_attrs.get(
                PRUNED_AT_ATTRIBUTE
            )
            if states.get(name) != "Success" or value is None:
                logger.warning(
                    "trial %s failed (%s): `dvc queue logs %s` says why",
                    name,
                    states.get(name, "gone from the queue"),
                    name,
                )
                self.study.tell(number, state=TrialState.FAIL)
                self.failures_in_a_row += 1
                continue
            self.failures_in_a_row = 0
            if pruned_at is not None:
                self.study.tell(number, state=TrialState.PRUNED)
                logger.info(
                    "trial %s pruned after epoch %s: %s", name, pruned_at, describe_values(values)
                )
            else:
                self.study.tell(number, float(value))
                logger.info(
                    "trial %s: %s %.4f with %s",
                    name,
                    self.search.metric,
                    value,
                    describe_values(values),
                )

    def _queue(self, number: int, name: str, values: dict[str, Any]) -> None:
        write_ticket(
            self.repo_root,
            name,
            TrialTicket(
                storage=self.storage_url,
                study=self.study_name,
                trial_number=number,
                metric=self.search.metric,
                parent_run_id=self.parent_run_id,
                run_name=f"{name} {describe_values(values)}",
            ),
        )
        settings = [*self.search.overrides]
        settings += [f"{key}={override_value(value)}" for key, value in values.items()]
        arguments = ["exp", "run", "--queue", "--name", name]
        for setting in settings:
            arguments += ["-S", setting]
        # The whole pipeline, report included: a trial run only up to evaluate would keep the
        # baseline's report outputs in its dvc.lock, and `dvc exp apply` of it fails on a
        # fresh clone, whose cache never had them ("Checkout failed for ... reports/...").
        _dvc(self.repo_root, *arguments)
        logger.info("queued trial %s: %s", name, describe_values(values))

    def _wait_for_one(self, names: list[str]) -> dict[str, str]:
        """The queue's states once one of these experiments no longer runs."""
        while True:
            states = queue_states(self.repo_root)
            if any(states.get(name) not in ACTIVE for name in names):
                return states
            time.sleep(POLL_SECONDS)

    def summary(self) -> SearchSummary:
        from optuna.trial import TrialState

        results = experiment_metrics(self.repo_root)
        outcomes = []
        for trial in self.study.trials:
            if trial.state == TrialState.RUNNING or trial.state == TrialState.WAITING:
                continue
            name = experiment_name(self.study_name, trial.number)
            metrics = results.get(name)
            if metrics is None:  # another machine's trial (a shared study): what the study holds
                reported = trial.intermediate_values
                epochs = max(reported, default=None)
                value = trial.value  # a pruned trial was told none: its last reported value
                if value is None and epochs is not None:
                    value = reported[epochs]
                tested: dict[str, float] = {}
            else:
                train_metrics = metrics.get(str(paths.TRAIN_METRICS_FILE), {})
                value, epochs = train_metrics.get(self.search.metric), train_metrics.get("epochs")
                test_metrics = metrics.get(str(paths.TEST_METRICS_FILE), {}).items()
                tested = {k: float(v) for k, v in test_metrics if isinstance(v, int | float)}
            outcomes.append(
                TrialOutcome(
                    number=trial.number,
                    experiment=name,
                    state=trial.state.name,
                    values=dict(trial.params),
                    value=value,
                    epochs=epochs,
                    test_metrics=tested,
                    here=metrics is not None,
                )
            )
        completed = [outcome for outcome in outcomes if outcome.state == "COMPLETE"]
        best = None
        if completed:
            best_number = self.study.best_trial.number
            best = next(outcome for outcome in completed if outcome.number == best_number)
        return SearchSummary(self.study_name, outcomes, best, self.parent_run_id)


def print_summary(summary: SearchSummary, metric: str) -> None:
    print(f"search {summary.study}: {len(summary.trials)} trials")
    for outcome in summary.trials:
        value = "-" if outcome.value is None else f"{outcome.value:.4f}"
        epochs = "-" if outcome.epochs is None else str(outcome.epochs)
        elsewhere = "" if outcome.here else "  (another machine)"
        print(
            f"  {outcome.experiment:<24} {outcome.state:<9} {metric} {value:<7} epochs {epochs:<3} "
            f"{describe_values(outcome.values)}{elsewhere}"
        )
    best = summary.best
    if best is None:
        print("no trial finished all its epochs: no best trial")
        return
    print(f"best trial: {best.experiment} ({metric} {best.value:.4f})")
    for key, value in best.values.items():
        print(f"  {key} = {override_value(value)}")
    if best.test_metrics:
        tested = ", ".join(f"{key} {value:.4g}" for key, value in best.test_metrics.items())
        print(f"  its test metrics (evaluate ran in its experiment): {tested}")
    if summary.parent_run_id:
        print(f"  MLflow: the search's run {summary.parent_run_id} holds every trial's run")
    if not best.here:
        print(
            "  it ran on another machine sharing the study: that machine shares it with "
            f"`dvc exp push origin {best.experiment}`, then here: "
            f"dvc exp pull origin {best.experiment} && dvc exp apply {best.experiment} && "
            "dvc repro"
        )
        return
    print(f"to use it: dvc exp apply {best.experiment} && dvc repro")
