"""dvc.yaml and src/cnn_pipeline/paths.py name the same files."""

from __future__ import annotations

import yaml

from cnn_pipeline import paths
from cnn_pipeline.stages import report

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
        )
    }
    assert produced["report"] == {
        str(path) for path in (paths.CALIBRATION_METRICS_FILE, *report.FIGURES)
    }
    # Every stage's own module is one of its dependencies, so editing it re-runs the stage.
    for name, stage in stages.items():
        assert f"src/cnn_pipeline/stages/{name}.py" in _declared(stage, "deps")
