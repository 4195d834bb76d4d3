"""Check stage: validate every section of params.yaml, and the inputs that are cheap to check,
before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a stage that rejects a
value itself has already lost its last good outputs. This stage runs first (every other stage
depends on its output): a bad value stops `dvc repro` or `dvc exp run` here, with the one line
the stage reading it would print and that stage's name, and every model, metric and figure stays
as it was.

Its output holds the same content for every valid params.yaml, so a new valid value re-runs
only the stages that read it. Run as `python -m cnn_pipeline.stages.check` (dvc.yaml does), it
imports neither the command line nor anything heavy: about a second. DVC's run-cache restores
its verdict without running it only for params and code that passed before (an image folder
deleted since is then found by the download stage). Queued experiments run it in their own
copy, so a bad value fails that experiment alone.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnn_pipeline import config, datasets, models, paths
from cnn_pipeline.atomic import write_json
from cnn_pipeline.errors import UserError, nearest_key_hint

logger = logging.getLogger(__name__)

# Each params.yaml section, its validator, and the first stage that reads it: an error names
# that stage, as the stage itself would.
SECTIONS: tuple[tuple[str, Callable[[dict[str, Any]], object], str], ...] = (
    ("data", datasets.data_config, "download"),
    ("model", models.model_config, "train"),
    ("augment", config.augment_config, "train"),
    ("train", config.train_config, "train"),
    ("mlflow", config.mlflow_config, "train"),
    ("evaluate", config.evaluate_config, "evaluate"),
    ("report", config.report_config, "report"),
)
SECTION_NAMES = [section for section, _, _ in SECTIONS]
VERDICT = {"params.yaml": "valid", "sections": SECTION_NAMES}


class StageError(Exception):
    """A UserError together with the stage that would have raised it."""

    def __init__(self, stage: str, error: UserError) -> None:
        super().__init__(str(error))
        self.stage = stage


def check_params(params: dict[str, Any]) -> None:
    """Validate every section as the stages do (same one-line `UserError`s), and refuse
    sections that no stage reads: what `cnn-pipeline params` checks before writing."""
    for name in params:
        if name not in SECTION_NAMES:
            hint = nearest_key_hint(str(name), SECTION_NAMES)
            raise UserError(f"params.yaml: unknown section {name}: {hint} fix or remove it")
    for _, validate, _ in SECTIONS:
        validate(params)


def check_inputs(data_config: config.DataConfig, repo_root: Path) -> None:
    """Inputs outside the repository that the download stage would reject: your image folders.

    Relative folders are relative to the repository, as the download stage reads them. Only
    the datasets that read these keys allow them to be set (datasets.data_config)."""
    for key in ("path", "test_path"):
        value = getattr(data_config, key)
        if value is not None and not (repo_root / value).is_dir():
            raise UserError(
                f"params.yaml: data.{key} = {value!r} is not a folder: give a folder "
                "with one sub-folder of images per class"
            )


def check(params_file: Path, workdir: Path) -> None:
    """Raise StageError for the first value in params_file that a stage would reject."""
    try:
        params = config.read_params(params_file)
    except UserError as error:
        raise StageError("check", error) from None
    for _, validate, stage in SECTIONS:
        try:
            validate(params)
        except UserError as error:
            raise StageError(stage, error) from None
    try:
        check_inputs(datasets.data_config(params), paths.repository_root(workdir))
    except UserError as error:
        raise StageError("download", error) from None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[check] %(message)s", stream=sys.stderr)
    workdir = Path.cwd()
    try:
        check(workdir / paths.PARAMS_FILE, workdir)
    except StageError as error:
        reader = "" if error.stage == "check" else f" (read by the {error.stage} stage)"
        print(f"cnn-pipeline check: error: {error}{reader}", file=sys.stderr)
        return 2
    write_json(VERDICT, workdir / paths.PARAMS_CHECK_FILE)
    logger.info("every section of %s is valid", paths.PARAMS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
