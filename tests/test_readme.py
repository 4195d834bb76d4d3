"""The README is a quick start whose commands work as written.

Every line of the README's `sh` blocks is a command. They run, in the README's order, in a copy
of the trained pipeline, through bash as a user's shell would, except the few named in NOT_RUN
with the reason; a command that fails, or a new README command that is neither run nor named
there, fails these tests. The pipeline output the README shows must match what `dvc repro`
printed, numbers aside.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO_ROOT, TrainedPipeline, copy_trained, run_command

pytestmark = pytest.mark.e2e

README = REPO_ROOT / "README.md"
QUICK_START_LINES = 160

# Commands that cannot run inside a test, and why. Each must still be in the README.
NOT_RUN = {
    "make test": "it runs this test: it would recurse",
    "mlflow ui": "a server that runs until stopped (tests/test_tracking.py reads the same store)",
}
# The sweep trains one model per value through DVC's queue: minutes, so only under `slow`.
SLOW = ("dvc exp run --queue", "dvc queue start")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def readme_commands() -> list[str]:
    """Each line of the README's `sh` blocks, without its trailing `# comment`."""
    lines = (line for block in readme_blocks("sh") for line in block.splitlines())
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines if line.strip()]


def quick_start_repo(trained_pipeline: TrainedPipeline, destination: Path) -> Path:
    """A copy of the trained pipeline (2 epochs) in which the README's commands run as written:
    conf/ says 2 epochs too, so that params.yaml is exactly conf/'s composition and every
    `dvc exp run` trains 2 epochs; `.venv` is this environment, for `make` and `source`."""
    repo = copy_trained(trained_pipeline, destination, keep_mlflow=False)
    config = repo / "conf" / "config.yaml"
    text, count = re.subn(r"^(\s+epochs:\s+)\d+", r"\g<1>2", config.read_text(), flags=re.M)
    assert count == 1, "conf/config.yaml has no train.epochs line"
    config.write_text(text)
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")
    with (repo / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")
    git = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid"}
    git |= {"GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
    run_command(["git", "commit", "-q", "-am", "conf/: 2 epochs"], repo, **git)
    # The picture the README's `predict` reads: a test digit, as an 8x8 PNG.
    with np.load(repo / "data" / "prepared" / "test.npz") as split:
        Image.fromarray(split["images"][0, :, :, 0]).save(repo / "digit.png")
    return repo


def run_readme_command(command: str, repo: Path) -> str:
    result = run_command(["bash", "-c", command], repo)
    return result.stdout + result.stderr


def test_readme_is_a_quick_start() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= QUICK_START_LINES, (
        f"README.md has {len(lines)} lines: keep it a quick start (at most {QUICK_START_LINES}) "
        "and move reference to docs/"
    )
    for command in NOT_RUN:
        assert command in readme_commands(), f"NOT_RUN names {command!r}, no longer in README.md"
    assert any(command.startswith(SLOW) for command in readme_commands())


def test_readme_links_exist() -> None:
    """The README's relative links (into docs/) name files that exist, anchors included."""
    for target in re.findall(r"\]\((?!https?://)([^)#]+)(#[^)]*)?\)", README.read_text()):
        path, anchor = target
        assert (REPO_ROOT / path).is_file(), f"README.md links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", (REPO_ROOT / path).read_text(), re.MULTILINE)
            slugs = {
                re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
                for heading in headings
            }
            assert anchor[1:] in slugs, f"README.md links to {path}{anchor}: no such heading"


def test_readme_shows_what_the_pipeline_prints(trained_pipeline: TrainedPipeline) -> None:
    """Each stage line of the README's `make pipeline` output is one that `dvc repro` printed,
    numbers, run ids and the elided folder (…) aside."""
    printed = (trained_pipeline.repro_output + trained_pipeline.repro_errors).splitlines()
    shown = [line for line in readme_blocks("text")[0].splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in shown] == [
        f"[{stage}" for stage in ("check", "download", "preprocess", "train", "evaluate", "report")
    ]
    variable = re.compile(r"[0-9a-f]{32}|\d+(?:\.\d+)?|…")
    for line in shown:
        pieces = variable.split(line)
        pattern = ".+?".join(re.escape(piece) for piece in pieces)
        assert any(re.fullmatch(pattern, real) for real in printed), (
            f"README.md shows {line!r}, but `dvc repro` printed no such line"
        )


def test_quick_start_commands_run_as_written(
    trained_pipeline: TrainedPipeline, tmp_path: Path
) -> None:
    repo = quick_start_repo(trained_pipeline, tmp_path / "repo")
    commands = [
        command
        for command in readme_commands()
        if command not in NOT_RUN and not command.startswith(SLOW)
    ]
    assert commands[0] == "make pipeline"
    for command in commands:
        output = run_readme_command(command, repo)
        if command == "make pipeline":  # trained already: DVC has nothing to run
            assert "Running stage 'train'" not in output, output
        if command.startswith("cnn-pipeline predict"):
            assert "digit.png" in output, output
    # The last block's `cnn-pipeline params` overrides are in params.yaml, and `dvc repro`
    # reproduced the pipeline for them.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for command in commands:
        if command.startswith("cnn-pipeline params "):
            for override in command.split()[2:]:
                key, value = override.split("=")
                *sections, last = key.split(".") if "." in key else (key, "name")
                section = functools.reduce(dict.__getitem__, sections, params)
                assert str(section[last]) == value, f"{command}: params.yaml has {key}={section}"
    status = run_command(["dvc", "status"], repo).stdout
    assert "Data and pipelines are up to date" in status, status


@pytest.mark.slow
def test_quick_start_sweep_runs_as_written(
    trained_pipeline: TrainedPipeline, tmp_path: Path
) -> None:
    repo = quick_start_repo(trained_pipeline, tmp_path / "repo")
    sweep = [command for command in readme_commands() if command.startswith(SLOW)]
    assert len(sweep) == 2
    for command in sweep:
        run_readme_command(command, repo)
    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], repo).stdout)
    swept = set(re.findall(r"train\.learning_rate=([\d.,]+)", sweep[0])[0].split(","))
    tested = {str(rate) for rate in learning_rates_with_test_metrics(shown)}
    assert swept <= tested, f"queued {swept}; `dvc exp show` has test metrics for {tested}"


def learning_rates_with_test_metrics(shown: object) -> list[object]:
    """The train.learning_rate of every revision in `dvc exp show --json`'s nested output
    that has a test accuracy: an experiment that failed has none."""
    if isinstance(shown, list):
        return [rate for item in shown for rate in learning_rates_with_test_metrics(item)]
    if not isinstance(shown, dict):
        return []
    found = []
    revision = shown.get("data")
    if isinstance(revision, dict) and "params" in revision:
        test_metrics = (revision.get("metrics") or {}).get("metrics/evaluate.json") or {}
        if "test_accuracy" in (test_metrics.get("data") or {}):
            params = revision["params"]["params.yaml"]["data"]
            found.append(params["train"]["learning_rate"])
    return found + [
        rate for value in shown.values() for rate in learning_rates_with_test_metrics(value)
    ]
