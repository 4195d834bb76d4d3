"""`cnn-pipeline params` checks before it writes; `dvc exp run` says when it drops a hand edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cnn_pipeline import cli
from cnn_pipeline.compose import compose_params, find_repository_root, parse_overrides
from cnn_pipeline.hand_edits import discarded_edits

from conftest import REPO_ROOT, copy_repository, run_command

CONF = REPO_ROOT / "conf"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repository(tmp_path / "repo")


@pytest.fixture
def conf_only(tmp_path: Path) -> Path:
    """What `cnn-pipeline params` reads and writes, without the cost of a git copy."""
    shutil.copytree(CONF, tmp_path / "conf")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    return tmp_path


def compose(*overrides: str) -> dict[str, object]:
    composed: dict[str, object] = yaml.safe_load(compose_params(CONF, list(overrides)))
    return composed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data=nosuch"],
            "data=nosuch: conf/data/ has no nosuch.yaml: choose one of "
            + ", ".join(sorted(path.stem for path in (CONF / "data").glob("*.yaml"))),
        ),
        (["model=lenet"], "did you mean model=lenet5?"),
        (
            ["train.lerning_rate=0.1"],
            "train.lerning_rate=0.1: conf/ has no key train.lerning_rate: "
            "did you mean train.learning_rate?",
        ),
        (["dat=mnist"], "conf/ has no key dat: did you mean data?"),
        (
            ["train.learning_rate=abc"],
            "params.yaml: train.learning_rate = 'abc' is invalid: Input should be a valid number",
        ),
        (["train.learning_rate=-1"], "train.learning_rate = -1 is invalid"),
        (["data=image_folder"], "data.path is required for data.name = 'image_folder'"),
        (["+train.momentum=0.9"], "unknown key train.momentum: the keys there are"),
        (["train.epochs=1,2"], "is a sweep: params.yaml holds one configuration"),
        (["train.epochs"], "train.epochs is not a valid override"),
    ],
)
def test_params_refuses_in_one_line_and_writes_nothing(
    conf_only: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    message: str,
) -> None:
    before = (conf_only / "params.yaml").read_bytes()
    files_before = sorted(conf_only.rglob("*"))
    monkeypatch.chdir(conf_only / "conf" / "data")

    assert cli.main(["params", *overrides]) == 2

    error = capsys.readouterr().err
    assert error.startswith("cnn-pipeline params: error: ")
    assert message in error
    assert error.count("\n") == 1, error
    assert (conf_only / "params.yaml").read_bytes() == before
    assert sorted(conf_only.rglob("*")) == files_before


def test_params_works_from_any_folder_of_the_repository(repo: Path) -> None:
    result = run_command(
        ["cnn-pipeline", "params", "train.epochs=3"], repo / "src" / "cnn_pipeline"
    )
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"] == 3
    assert not (repo / "src" / "cnn_pipeline" / "params.yaml").exists()
    assert "Traceback" not in result.stderr


def test_repository_root_is_found_from_a_subfolder(repo: Path, tmp_path: Path) -> None:
    assert find_repository_root(repo / "src" / "cnn_pipeline" / "models") == repo.resolve()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(Exception, match=r"no folder at or above .* holds dvc\.yaml and conf/"):
        find_repository_root(outside)


def test_params_names_the_hand_edit_it_replaces(
    conf_only: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    params_file = conf_only / "params.yaml"
    params_file.write_text(params_file.read_text().replace("optimizer: adam", "optimizer: sgd"))
    monkeypatch.chdir(conf_only)

    assert cli.main(["params", "train.epochs=5"]) == 0

    error = caplog.text
    assert "loses train.optimizer = 'sgd' (conf/: 'adam')" in error
    assert "also give train.optimizer=sgd" in error
    params = yaml.safe_load(params_file.read_text())
    assert params["train"]["optimizer"] == "adam"
    assert params["train"]["epochs"] == 5


def test_only_values_that_no_override_asked_to_change_count_as_discarded() -> None:
    defaults = compose()
    current = compose("train.learning_rate=0.003", "model.dropout_rate=0.3")
    # A group change, a preset and a named key replace values on purpose; the others are lost.
    new = compose("data=mnist", "train.learning_rate=0.01")
    overrides = parse_overrides(CONF, ["data=mnist", "train.learning_rate=0.01"])
    lost = discarded_edits(current, new, defaults, overrides)
    assert [(edit.key, edit.value, edit.composed) for edit in lost] == [
        ("model.dropout_rate", 0.3, 0.5)
    ]
    assert lost[0].as_override() == "model.dropout_rate=0.3"

    preset = compose("experiment=cifar10_resnet")
    assert discarded_edits(defaults, preset, defaults, parse_overrides(CONF, [])) == []
    current["train"]["momentum"] = 0.9  # type: ignore[index]
    lost = discarded_edits(current, defaults, defaults, parse_overrides(CONF, ["model=lenet5"]))
    assert [edit.as_override() for edit in lost] == [
        "train.learning_rate=0.003",
        "+train.momentum=0.9",
    ]


def test_dvc_exp_run_says_which_hand_edit_it_discards(repo: Path) -> None:
    """Through the real `dvc exp run` (queued, so nothing trains): DVC imports
    hydra_plugins/ right before it composes, while params.yaml is still the user's."""
    params_file = repo / "params.yaml"
    params_file.write_text(params_file.read_text().replace("optimizer: adam", "optimizer: sgd"))

    result = run_command(["dvc", "exp", "run", "--queue", "-S", "train.epochs=1"], repo)

    warnings = [line for line in result.stderr.splitlines() if line.startswith("cnn-pipeline")]
    assert warnings == [
        "cnn-pipeline: dvc exp run recomposes params.yaml from conf/ and loses "
        "train.optimizer = 'sgd' (conf/: 'adam'): to keep that, add -S train.optimizer=sgd "
        "(or use `dvc exp run --no-hydra`, which applies -S to params.yaml as it is)"
    ], result.stderr
    assert "optimizer: sgd" in params_file.read_text()  # the workspace itself is left alone

    bad = run_command(["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=abc"], repo)
    assert (
        "cnn-pipeline: the stages will refuse this params.yaml: params.yaml: "
        "train.learning_rate = 'abc' is invalid: Input should be a valid number"
    ) in bad.stderr
