"""dvc.yaml and src/cnn_pipeline/paths.py name the same files."""

from __future__ import annotations

import subprocess

import yaml

from cnn_pipeline import paths
from cnn_pipeline.stages import check, report

from conftest import REPO_ROOT


def _declared(stage: dict[str, object], field: str) -> set[str]:
    entries = stage.get(field, [])
    assert isinstance(entries, list)
    return {next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries}


def test_stage_outputs_match_the_paths_module() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    produced = {
        name: set().union(*(_declared(stage, field) for field in ("outs", "metrics", "plots")))
        for name, stage in stages.items()
    }
    assert produced["check"] == {str(paths.PARAMS_CHECK_FILE)}
    assert produced["download"] == {str(paths.RAW_DIR)}
    assert produced["preprocess"] == {str(paths.PREPARED_DIR)}
    assert produced["train"] == {
        str(path)
        for path in (
            paths.MODEL_INFO_FILE,
            paths.RECEPTIVE_FIELDS_FILE,
            paths.MODEL_FILE,
            paths.CHECKPOINT_DIR,
            paths.RUN_FILE,
            paths.TRAIN_METRICS_FILE,
            paths.TRAIN_SPEED_FILE,
            paths.HISTORY_FILE,
        )
    }
    assert produced["evaluate"] == {
        str(path)
        for path in (
            paths.TEST_METRICS_FILE,
            paths.PER_CLASS_FILE,
            paths.PREDICTIONS_FILE,
            paths.CONFUSION_PNG,
            paths.PER_CLASS_PNG,
        )
    }
    assert produced["report"] == {
        str(path) for path in (paths.CALIBRATION_METRICS_FILE, *report.FIGURES)
    }
    # Every stage's own module is one of its dependencies, so editing it re-runs the stage;
    # and every stage after check depends on check's verdict, so a bad value stops the
    # pipeline before DVC deletes any output.
    for name, stage in stages.items():
        assert f"src/cnn_pipeline/stages/{name}.py" in _declared(stage, "deps")
        if name != "check":
            assert str(paths.PARAMS_CHECK_FILE) in _declared(stage, "deps"), name


def test_every_output_is_versioned_by_git_or_by_dvc() -> None:
    """An output that is neither cached by DVC nor committed to git is missing from every other
    revision: `dvc plots diff` cannot draw it and `dvc exp apply` leaves a stale copy."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    outputs = [
        entry
        for stage in stages.values()
        for field in ("outs", "metrics", "plots")
        for entry in stage.get(field, [])
    ]
    for entry in outputs:
        path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        ignored = (
            subprocess.run(
                ["git", "check-ignore", "-q", path], cwd=REPO_ROOT, check=False
            ).returncode
            == 0
        )
        cached = options.get("cache", True)
        assert cached == ignored, (
            f"{path}: cache {cached} but {'ignored' if ignored else 'not ignored'} by git"
        )


def test_each_figure_is_drawn_once_by_dvc_plots() -> None:
    """The plots' files are top-level plots only: as stage plots too, `dvc plots show` drew
    each PNG twice and added a plot of its own guess for each CSV."""
    document = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    stage_plots = set().union(*(_declared(stage, "plots") for stage in document["stages"].values()))
    top_level = [
        entry if isinstance(entry, str) else next(iter(entry)) for entry in document["plots"]
    ]
    figures = [str(path) for path in (paths.CONFUSION_PNG, paths.PER_CLASS_PNG, *report.FIGURES)]
    assert sorted(name for name in top_level if name.endswith(".png")) == sorted(figures)
    assert not stage_plots


def test_the_check_stage_validates_every_params_section() -> None:
    """A section the check stage skipped could still fail its stage after DVC deleted that
    stage's outputs."""
    sections = set(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    assert {section for section, _, _ in check.SECTIONS} == sections
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages["check"]["params"]) == sections
