"""A bad value costs nothing: `dvc repro` and `dvc exp run` stop at the check stage, before DVC
deletes any stage's outputs, with the one line the stage reading the value would print and that
stage's name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from cnn_pipeline import models

from conftest import TrainedPipeline, copy_trained, run_command

pytestmark = pytest.mark.e2e

OUTPUT_FOLDERS = ("data", "models", "metrics", "reports")


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def output_digests(repo: Path) -> dict[str, str]:
    """Every model, metric, plot, report and data file, by content; the check stage's own
    verdict aside."""
    return {
        path.relative_to(repo).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in OUTPUT_FOLDERS
        for path in sorted((repo / folder).rglob("*"))
        if path.is_file() and path.name != "params_check.json"
    }


@pytest.fixture(scope="module")
def repo(trained_pipeline: TrainedPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_trained(trained_pipeline, tmp_path_factory.mktemp("check") / "repo")


# One value per params.yaml section that the stage reading it rejects, and that stage's line.
BAD_VALUES = [
    (
        {"data": {"validation_fraction": 1.5}},
        "cnn-pipeline check: error: params.yaml: data.validation_fraction = 1.5 is invalid: "
        "Input should be less than 1 (read by the download stage)",
    ),
    (
        {"model": {"dropout_rate": 1.0}},
        "cnn-pipeline check: error: params.yaml: model.dropout_rate = 1.0 is invalid: "
        "Input should be less than 1 (read by the train stage)",
    ),
    (
        # A network that no module in src/cnn_pipeline/models/ declares.
        {"model": {"name": "vgg16"}},
        "cnn-pipeline check: error: params.yaml: model.name = 'vgg16' is invalid: Input "
        f"should be one of {', '.join(map(repr, models.networks()))} (a module in "
        "src/cnn_pipeline/models/ adds one: see docs/extending.md) (read by the train stage)",
    ),
    (
        {"augment": {"rotate": 0.9}},
        "cnn-pipeline check: error: params.yaml: augment.rotate = 0.9 is invalid: "
        "Input should be less than or equal to 0.5 (read by the train stage)",
    ),
    (
        {"train": {"learning_rate": -1}},
        "cnn-pipeline check: error: params.yaml: train.learning_rate = -1 is invalid: "
        "Input should be greater than 0 (read by the train stage)",
    ),
    (
        {"mlflow": {"experiment_name": ""}},
        "cnn-pipeline check: error: params.yaml: mlflow.experiment_name = '' is invalid: "
        "String should have at least 1 character (read by the train stage)",
    ),
    (
        {"evaluate": {"batch_size": 0}},
        "cnn-pipeline check: error: params.yaml: evaluate.batch_size = 0 is invalid: "
        "Input should be greater than 0 (read by the evaluate stage)",
    ),
    (
        {"report": {"calibration_bins": 1}},
        "cnn-pipeline check: error: params.yaml: report.calibration_bins = 1 is invalid: "
        "Input should be greater than or equal to 2 (read by the report stage)",
    ),
    (
        # An input the download stage would reject, found without reading any image.
        {
            "data": {
                "name": "image_folder",
                "path": "no/such/folder",
                "image_size": 8,
                "color_mode": "grayscale",
            }
        },
        "cnn-pipeline check: error: params.yaml: data.path = 'no/such/folder' is not a "
        "folder: give a folder with one sub-folder of images per class "
        "(read by the download stage)",
    ),
]


def test_every_section_of_params_yaml_is_covered() -> None:
    sections = set(yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()))
    assert {next(iter(changes)) for changes, _ in BAD_VALUES} == sections


def _error_lines(result_output: str) -> list[str]:
    return [line for line in result_output.splitlines() if line.startswith("cnn-pipeline ")]


@pytest.mark.parametrize(
    ("changes", "message"), BAD_VALUES, ids=[next(iter(c)) for c, _ in BAD_VALUES]
)
def test_bad_value_stops_dvc_repro_before_any_output_is_deleted(
    repo: Path, changes: dict[str, dict[str, object]], message: str
) -> None:
    params_file = repo / "params.yaml"
    good = params_file.read_text()
    before = output_digests(repo)
    params = yaml.safe_load(good)
    for section, values in changes.items():
        params[section].update(values)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = run_command(["dvc", "repro"], repo, check=False)
    finally:
        params_file.write_text(good)
    assert result.returncode != 0
    assert running_stages(result.stdout) == ["check"]
    assert _error_lines(result.stdout + result.stderr) == [message]
    assert "Traceback" not in result.stdout + result.stderr
    assert output_digests(repo) == before


def test_bad_value_stops_dvc_exp_run_before_it_writes_anything(repo: Path) -> None:
    """`dvc exp run` composes params.yaml first: a value the stages would refuse stops it
    there (hydra_plugins/), before params.yaml is rewritten or any stage runs."""
    before = output_digests(repo)
    params_before = (repo / "params.yaml").read_text()
    result = run_command(
        ["dvc", "exp", "run", "-S", "train.epochs=2", "-S", "train.learning_rate=-0.1"],
        repo,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "ERROR: cnn-pipeline: nothing was run or queued: the stages would refuse this "
        "params.yaml: params.yaml: train.learning_rate = -0.1 is invalid: Input should be "
        "greater than 0"
    ), result.stderr
    assert running_stages(result.stdout) == []
    assert (repo / "params.yaml").read_text() == params_before
    assert output_digests(repo) == before


def test_after_a_failed_check_only_the_check_reruns(repo: Path) -> None:
    """The failed check lost its own verdict; rewritten the same, it re-runs nothing else. A
    valid change then re-runs the check and the stage that reads the value."""
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) in (["check"], [])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["confusion_normalize"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_command(["dvc", "repro"], repo)
    assert running_stages(result.stdout) == ["check", "evaluate"]
