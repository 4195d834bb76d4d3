"""Comparing experiments as the README says: `dvc exp show` on one screen, `dvc plots diff`
drawing every figure of both revisions, `dvc exp apply` leaving a clean `dvc status`, and
`dvc metrics diff` empty between two identical trainings."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, TrainedPipeline, copy_trained, run_command

pytestmark = pytest.mark.e2e

SCREEN_WIDTH = 160
FIGURES = [
    "reports/confusion_matrix.png",
    "reports/per_class_f1.png",
    "reports/training_curves.png",
    "reports/first_layer_filters.png",
    "reports/activation_maps.png",
    "reports/mistakes.png",
    "reports/calibration.png",
]
CURVES = ["Loss per epoch", "Accuracy per epoch", "Test confusion matrix", "Test F1 per class"]


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def readme_exp_show() -> list[str]:
    """The `dvc exp show` command of the README's Compare section."""
    readme = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"^(dvc exp show --only-changed [^#\n]*?)\s*(#.*)?$", readme, re.MULTILINE)
    assert found, "README.md shows no `dvc exp show --only-changed ...` command"
    return shlex.split(found.group(1))


@pytest.fixture(scope="module")
def repo(trained_pipeline: TrainedPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained pipeline and one experiment with another learning rate."""
    repo = copy_trained(trained_pipeline, tmp_path_factory.mktemp("exps") / "repo", False)
    result = run_command(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "lr-high",
            "-S",
            "train.epochs=2",
            "-S",
            "train.learning_rate=0.005",
        ],
        repo,
    )
    assert running_stages(result.stdout) == ["check", "train", "evaluate", "report"]
    return repo


def test_exp_show_with_the_readme_recipe_fits_one_screen(repo: Path) -> None:
    result = run_command([*readme_exp_show(), "--no-pager"], repo, COLUMNS=str(SCREEN_WIDTH))
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= SCREEN_WIDTH
    assert "…" not in result.stdout, f"columns cut to fit:\n{result.stdout}"
    header = next(line for line in lines if "Experiment" in line).split()
    assert {"test_accuracy", "test_loss", "test_macro_f1", "train.learning_rate"} <= set(header)
    assert not [column for column in header if "/" in column], "hash columns shown"
    assert "lr-high" in result.stdout


def test_plots_diff_draws_every_figure_of_both_revisions(repo: Path, tmp_path: Path) -> None:
    result = run_command(
        ["dvc", "plots", "diff", "HEAD", "lr-high", "--json", "-o", str(tmp_path / "plots")], repo
    )
    plots = json.loads(result.stdout)
    assert "errors" not in plots, plots.get("errors")
    assert set(plots["data"]) == {*CURVES, *FIGURES}
    for name in CURVES:
        [plot] = plots["data"][name]
        assert plot["type"] == "vega" and plot["revisions"] == ["HEAD", "lr-high"], name
        drawn = {row["rev"] for row in plot["content"]["data"]["values"]}
        assert drawn == {"HEAD", "lr-high"}, name
    for name in FIGURES:
        images = plots["data"][name]
        assert [image["revisions"] for image in images] == [["HEAD"], ["lr-high"]], name
        contents = [Path(image["url"]).read_bytes() for image in images]
        assert all(content[:4] == b"\x89PNG" for content in contents), name
    # Different trainings, different figures: each revision's own file was loaded.
    assert len({Path(i["url"]).read_bytes() for i in plots["data"]["reports/mistakes.png"]}) == 2


def test_plots_show_draws_each_figure_once(repo: Path) -> None:
    run_command(["dvc", "plots", "show"], repo)
    html = (repo / "dvc_plots" / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(images) == sorted(f"static/workspace_{f.replace('/', '_')}" for f in FIGURES)
    titles = re.findall(r'"title": \{\s*"text": "([^"]*)"', html)
    assert sorted(titles) == sorted(CURVES)


def test_exp_apply_leaves_dvc_status_clean(repo: Path) -> None:
    before = (repo / "models/mlflow_run.json").read_text()
    run_command(["dvc", "exp", "apply", "HEAD"], repo)  # back to the baseline's outputs
    assert (repo / "models/mlflow_run.json").read_text() != before
    status = run_command(["dvc", "status"], repo)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    run_command(["dvc", "exp", "apply", "lr-high"], repo)
    assert (repo / "models/mlflow_run.json").read_text() == before
    status = run_command(["dvc", "status"], repo)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout


@pytest.mark.slow
def test_identical_trainings_have_no_metrics_diff_and_exp_show_still_fits(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == 0.005  # the workspace holds lr-high's results
    result = run_command(["dvc", "exp", "run", "-n", "again", "-S", "train.epochs=2"], repo)
    assert "train" in running_stages(result.stdout)  # trained again, not restored
    diff = run_command(["dvc", "metrics", "diff", "HEAD", "again"], repo)
    assert diff.stdout.strip() == "", diff.stdout
    shown = run_command([*readme_exp_show(), "--no-pager"], repo, COLUMNS=str(SCREEN_WIDTH))
    assert "again" in shown.stdout and "lr-high" in shown.stdout
    assert "…" not in shown.stdout, shown.stdout
    assert max(len(line.rstrip()) for line in shown.stdout.splitlines()) <= SCREEN_WIDTH
