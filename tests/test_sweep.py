"""A parallel sweep as docs/experimenting.md runs it, on a fresh clone with no MLflow store yet:
`dvc exp run --queue` of four experiments, then `dvc queue start -j 2`; each MLflow run is
named after its experiment and the params it changes from the commit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import copy_repository, run_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEARNING_RATES = ("0.001", "0.002", "0.003", "0.004")


def test_a_parallel_sweep_on_a_fresh_clone_loses_no_experiment_and_no_run(
    tmp_path: Path,
) -> None:
    repo = copy_repository(tmp_path)
    assert not (repo / "mlflow.db").exists()
    run_command(
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-S",
            "train.epochs=1",
            "-S",
            f"train.learning_rate={','.join(LEARNING_RATES)}",
        ],
        repo,
    )
    run_command(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.monotonic() + 900
    while True:
        status = run_command(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") == 4, status

    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = [
        experiment
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        if experiment.get("revs")
    ]
    names = {experiment["name"] for experiment in experiments}
    assert len(names) == 4, shown

    import mlflow

    committed = yaml.safe_load((repo / "params.yaml").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cnn-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["dvc.experiment"] for run in runs} == names
    assert sorted(run.data.params["train.learning_rate"] for run in runs) == list(LEARNING_RATES)
    for run in runs:
        # `mlflow ui`'s runs table tells the runs apart by name: what each one changed.
        # What differs from the commit's params.yaml, in its order: the committed learning
        # rate is not named.
        rate = run.data.params["train.learning_rate"]
        changed = "train.epochs=1"
        if rate != str(committed["train"]["learning_rate"]):
            changed = f"train.learning_rate={rate} {changed}"
        assert run.info.run_name == f"{run.data.tags['dvc.experiment']} {changed}"
        assert run.data.tags["params_changed"] == changed
        # The -S values are the only source that differs from the commit; the outputs DVC
        # deleted and rewrote (reports/receptive_fields.json, metrics/) do not count.
        assert run.data.tags["workspace_changes"] == "params.yaml"
        # evaluate and report logged to this experiment's own run
        assert "test_accuracy" in run.data.metrics
        assert "test_expected_calibration_error" in run.data.metrics
