"""`cnn-pipeline tune`: bad search files fail in one line before anything trains (fast), and a
tiny search runs as a user runs it: queued DVC experiments two at a time, MLflow runs nested
under the search's run, a pruned trial, Ctrl-C, and a resume that repeats no trial (e2e)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cnn_pipeline import cli, paths
from cnn_pipeline.search import space
from cnn_pipeline.search.space import METRICS
from cnn_pipeline.training import HISTORY_COLUMNS

from conftest import (
    REPO_ROOT,
    TrainedPipeline,
    command_environment,
    copy_repository,
    copy_trained,
    run_command,
)

# A search small enough for a test: 3 epochs of a narrow network per trial. Its learning rates
# reach down to 1e-6, which learns nothing in 3 epochs, and a trial is pruned from its first
# epoch on unless it is about as good as the best finished trial then (the 90th percentile):
# of the two trials that follow the first two, one is pruned (seeded, so always the same).
TINY_SEARCH = {
    "metric": "val_accuracy",
    "direction": "maximize",
    "trials": 4,
    "timeout": None,
    "seed": 0,
    "overrides": ["train.epochs=3", "model.filters=[8,16]"],
    "pruner": {"enabled": True, "percentile": 90, "startup_trials": 1, "warmup_epochs": 1},
    "space": {
        "train.learning_rate": {"type": "float", "low": 1.0e-6, "high": 1.0e-2, "log": True},
        "model.dropout_rate": {"type": "float", "low": 0.0, "high": 0.5},
    },
}


def test_search_metrics_are_what_the_train_stage_reports_every_epoch() -> None:
    assert set(METRICS) <= set(HISTORY_COLUMNS)


@pytest.fixture
def config_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """conf/, dvc.yaml and params.yaml: enough for tune to check a search file."""
    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error_line(
    repo: Path, capsys: pytest.CaptureFixture[str], search: dict[str, object] | str, *args: str
) -> str:
    """Write conf/search/bad.yaml, run `cnn-pipeline tune --search bad`, return its one line."""
    text = search if isinstance(search, str) else yaml.safe_dump(search)
    (repo / "conf" / "search" / "bad.yaml").write_text(text)
    assert cli.main(["tune", "--search", "bad", *args]) == 2
    assert not (repo / paths.SEARCH_DIR).exists(), "nothing may be written before the checks"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cnn-pipeline tune: error: ")
    return lines[0]


def _with(**changes: object) -> dict[str, object]:
    return {**TINY_SEARCH, **changes}


def test_the_default_search_file_passes_its_own_checks() -> None:
    from cnn_pipeline.search.space import check_search, load_search

    search = load_search(REPO_ROOT / "conf", "default")
    check_search(search, REPO_ROOT / "conf", search.trials, search.timeout)
    assert search.metric == "val_accuracy" and search.direction == "maximize"


def test_an_unknown_key_in_the_space_names_the_nearest(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {"train.learning_rat": {"type": "float", "low": 0.001, "high": 0.01}}
    line = _error_line(config_repo, capsys, _with(space=space))
    assert "train.learning_rat" in line and "did you mean train.learning_rate?" in line


def test_an_empty_range_is_refused(config_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = {"model.dropout_rate": {"type": "float", "low": 0.5, "high": 0.2}}
    line = _error_line(config_repo, capsys, _with(space=space))
    assert "model.dropout_rate has an empty range (low 0.5 >= high 0.2)" in line


def test_a_metric_the_train_stage_does_not_write_is_refused(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error_line(config_repo, capsys, _with(metric="test_accuracy"))
    assert "'test_accuracy'" in line and "val_accuracy" in line and "never searched on" in line
    line = _error_line(config_repo, capsys, _with(metric="val_acuracy"))
    assert "did you mean val_accuracy?" in line


def test_a_direction_that_looks_for_the_worst_model_is_refused(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error_line(config_repo, capsys, _with(metric="val_loss"))
    assert "set direction: minimize" in line


def test_zero_trials_are_refused(config_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(config_repo, capsys, TINY_SEARCH, "--trials", "0")
    assert "0 trials" in line and "--trials 1 or more" in line
    line = _error_line(config_repo, capsys, _with(trials=0))
    assert "0 trials" in line


def test_a_misspelt_setting_is_named_and_a_float_is_read_as_people_write_it(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error_line(config_repo, capsys, {**_with(), "trails": 3})
    assert "unknown key trails" in line and "did you mean trials?" in line
    text = yaml.safe_dump(TINY_SEARCH).replace("low: 1.0e-06", "low: 1e-6")
    (config_repo / "conf" / "search" / "people.yaml").write_text(text)
    assert (
        space.load_search(config_repo / "conf", "people").space["train.learning_rate"].low == 1e-6
    )  # PyYAML alone reads `1e-6` as text


def test_a_hand_edit_every_trial_would_drop_is_refused_with_the_override_that_keeps_it(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = yaml.safe_load((config_repo / "params.yaml").read_text())
    params["mlflow"]["experiment_name"] = "mine"  # an edit conf/ knows nothing of
    params["train"]["learning_rate"] = 0.5  # a searched key: every trial sets it anyway
    (config_repo / "params.yaml").write_text(yaml.safe_dump(params))
    line = _error_line(config_repo, capsys, TINY_SEARCH)
    assert "params.yaml holds mlflow.experiment_name=mine, which conf/ does not" in line
    assert "learning_rate" not in line
    assert "cnn-pipeline params --reset" in line


def test_a_choice_the_pipeline_would_refuse_fails_before_training(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {"train.batch_size": {"type": "categorical", "choices": [32, 0]}}
    line = _error_line(config_repo, capsys, _with(space=space))
    assert "train.batch_size = 0 fails" in line


def test_an_unknown_search_file_names_the_ones_there(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["tune", "--search", "defalt"]) == 2
    assert "did you mean --search default?" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.learning_rate", 1e-05),  # repr '1e-05': no dot, which PyYAML would read as text
        ("train.learning_rate", 0.0031234567),
        ("model.filters", [16, 32]),
        ("model.dropout_rate", 0.0),
        ("train.batch_size", 64),
        ("model.batch_norm", False),
        ("train.optimizer", "sgd"),
    ],
)
def test_a_trial_value_reaches_params_yaml_unchanged(key: str, value: object) -> None:
    from cnn_pipeline.compose import compose_params, flatten
    from cnn_pipeline.search.space import override_value

    composed = yaml.safe_load(
        compose_params(REPO_ROOT / "conf", [f"{key}={override_value(value)}"])
    )
    assert flatten(composed)[key] == value


def test_a_study_resumed_with_another_space_is_refused(
    config_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    (config_repo / paths.SEARCH_DIR).mkdir()
    study = optuna.create_study(
        study_name="bad", storage=f"sqlite:///{config_repo / paths.SEARCH_DB_FILE}"
    )
    study.set_user_attr("search", {"metric": "val_accuracy", "space": {"train.epochs": "int"}})
    (config_repo / "conf" / "search" / "bad.yaml").write_text(yaml.safe_dump(TINY_SEARCH))
    assert cli.main(["tune", "--search", "bad"]) == 2
    error = capsys.readouterr().err
    assert "study 'bad' searched another space" in error and "another --name" in error
    assert not (config_repo / "mlflow.db").exists()


def test_outside_a_search_the_train_stage_finds_no_ticket_and_never_imports_optuna(
    tmp_path: Path,
) -> None:
    from cnn_pipeline.search.ticket import TrialTicket, read_ticket, write_ticket

    assert read_ticket(tmp_path, None) is None  # `dvc repro`: no DVC_EXP_NAME
    assert read_ticket(tmp_path, "some-experiment") is None  # a plain `dvc exp run`
    ticket = TrialTicket("sqlite:///x.db", "s", 3, "val_accuracy", None, "s-3 lr=0.1")
    write_ticket(tmp_path, "s-3", ticket)
    assert read_ticket(tmp_path, "s-3") == ticket
    assert (tmp_path / paths.TRIAL_TICKET_DIR / "s-3.json").stat().st_mode & 0o777 == 0o600
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cnn_pipeline.cli; from cnn_pipeline.search import "
            "ticket; print('optuna' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "False"


def test_a_best_trial_of_another_machine_says_how_to_fetch_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cnn_pipeline.search.tune import SearchSummary, TrialOutcome, print_summary

    values = {"train.learning_rate": 0.001}
    mine = TrialOutcome(0, "lr-0", "COMPLETE", values, 0.90, 3, {"test_accuracy": 0.89})
    theirs = TrialOutcome(1, "lr-1", "COMPLETE", values, 0.95, 3, here=False)
    print_summary(SearchSummary("lr", [mine, theirs], theirs, None), "val_accuracy")
    printed = capsys.readouterr().out
    assert "lr-1 " in printed and "(another machine)" in printed
    assert "dvc exp pull origin lr-1 && dvc exp apply lr-1 && dvc repro" in printed
    assert "to use it: dvc exp apply lr-1" not in printed


@pytest.mark.e2e
def test_a_one_trial_search_is_an_experiment_and_a_child_run(
    trained_pipeline: TrainedPipeline, tmp_path: Path
) -> None:
    """The shortest search there is, in `make test`: one trial of one epoch."""
    import mlflow

    repo = copy_trained(trained_pipeline, tmp_path / "repo")
    (repo / "conf" / "search" / "tiny.yaml").write_text(yaml.safe_dump(TINY_SEARCH))
    searched = run_command(
        [
            "cnn-pipeline",
            "tune",
            "--search",
            "tiny",
            "--trials",
            "1",
            "--name",
            "one",
            "train.epochs=1",
        ],
        repo,
    )
    assert "best trial: one-0" in searched.stdout
    assert "dvc exp apply one-0 && dvc repro" in searched.stdout
    assert "test_accuracy" in searched.stdout
    shown = run_command(["dvc", "exp", "show", "--json"], repo).stdout
    assert '"one-0"' in shown
    assert not list((repo / paths.TRIAL_TICKET_DIR).glob("*.json"))

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("cnn-pipeline").experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`search.study` = 'one' and "
                                   "attributes.run_name = 'one'")  # fmt: skip
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space.train.learning_rate"] == "float 1e-06..0.01 log"
    (child,) = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert child.info.run_name.startswith("one-0 ")
    assert child.data.tags["dvc.experiment"] == "one-0"
    assert parent.data.metrics["best_val_accuracy"] == child.data.metrics["val_accuracy"]


def _tune_command(*arguments: str) -> list[str]:
    return ["cnn-pipeline", "tune", "--search", "tiny", "-j", "2", "--trials", "4", *arguments]


def _running_trials(repo: Path) -> list[str]:
    status = run_command(["dvc", "queue", "status"], repo).stdout
    return [line.split()[1] for line in status.splitlines() if line.endswith("Running")]


def _interrupt_while_trials_run(repo: Path) -> subprocess.CompletedProcess[str]:
    """Start the search, press Ctrl-C once its first trials train, wait for it to stop."""
    started = subprocess.Popen(
        _tune_command(),
        cwd=repo,
        env=command_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal would: a background job of a non-interactive shell ignores SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600
    while not _running_trials(repo):
        assert started.poll() is None, started.communicate()
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(2)
    started.send_signal(signal.SIGINT)
    output, errors = started.communicate(timeout=300)
    return subprocess.CompletedProcess(started.args, started.returncode, output, errors)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_tiny_search_prunes_survives_ctrl_c_and_its_best_trial_reproduces(
    tmp_path: Path,
) -> None:
    import mlflow
    import optuna

    repo = copy_repository(tmp_path)
    (repo / "conf" / "search" / "tiny.yaml").write_text(yaml.safe_dump(TINY_SEARCH))

    interrupted = _interrupt_while_trials_run(repo)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "run the same command to continue it" in interrupted.stderr
    assert _running_trials(repo) == []
    assert not list((repo / paths.TRIAL_TICKET_DIR).glob("*.json"))

    finished = run_command(_tune_command(), repo)
    best_name = finished.stdout.split("best trial: ")[1].split()[0]
    assert f"dvc exp apply {best_name} && dvc repro" in finished.stdout

    storage = f"sqlite:///{repo / paths.SEARCH_DB_FILE}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [trial.state.name for trial in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 4, states
    assert "PRUNED" in states, states
    interrupted_trials = [trial for trial in study.trials if trial.state.name == "FAIL"]
    assert interrupted_trials, "the Ctrl-C stopped no trial"
    retried = {trial.user_attrs.get("retry_of") for trial in study.trials}
    assert {trial.number for trial in interrupted_trials} <= retried
    done = [trial for trial in study.trials if trial.state.name in ("COMPLETE", "PRUNED")]
    tried = [tuple(sorted(trial.params.items())) for trial in done]
    assert len(set(tried)) == len(tried), "a trial was repeated"

    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = {
        experiment["name"]: experiment["revs"][0]["data"]["metrics"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
    }
    for trial in done:
        train_metrics = experiments[f"tiny-{trial.number}"]["metrics/train.json"]["data"]
        assert (train_metrics["epochs"] == 3) == (trial.state.name == "COMPLETE")

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("cnn-pipeline").experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("search.study") == "tiny"
                 and "mlflow.parentRunId" not in run.data.tags]  # fmt: skip
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_experiment"] == best_name
    assert parent.data.metrics["best_val_accuracy"] == study.best_value
    children = {
        run.data.tags["search.trial"]: run
        for run in runs
        if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    for trial in done:
        child = children[str(trial.number)]
        assert child.info.run_name.startswith(f"tiny-{trial.number} ")
        assert "learning_rate=" in child.info.run_name and "dropout_rate=" in child.info.run_name
        assert (child.data.tags.get("search.pruned") == "true") == (trial.state.name == "PRUNED")

    again = run_command(_tune_command(), repo)  # a finished search: nothing new trains
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == len(study.trials)
    assert f"best trial: {best_name}" in again.stdout

    run_command(["dvc", "exp", "apply", best_name], repo)
    run_command(["dvc", "repro", "--force", "--single-item", "train"], repo)
    retrained = json.loads((repo / paths.TRAIN_METRICS_FILE).read_text())
    assert retrained["val_accuracy"] == study.best_value
