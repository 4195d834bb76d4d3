"""`cnn-pipeline params` checks before it writes and keeps what params.yaml holds; `dvc exp run`
stops before it would drop it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cnn_pipeline import cli
from cnn_pipeline.compose import compose_params, find_repository_root, parse_overrides
from cnn_pipeline.hand_edits import discarded_edits, overrides_that_keep

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


def test_params_keeps_hand_edits_and_a_switched_network(
    conf_only: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A committed `model=lenet5` and a hand edit survive the next `cnn-pipeline params`;
    `1e-3` (a string to PyYAML's YAML 1.1) counts as the number a person wrote."""
    monkeypatch.chdir(conf_only)
    assert cli.main(["params", "model=lenet5"]) == 0
    params_file = conf_only / "params.yaml"
    params_file.write_text(
        params_file.read_text().replace("learning_rate: 0.002", "learning_rate: 1e-3")
    )
    caplog.set_level("INFO")

    assert cli.main(["params", "train.epochs=5"]) == 0

    params = yaml.safe_load(params_file.read_text())
    assert params["model"] == compose("model=lenet5")["model"]
    assert (params["train"]["learning_rate"], params["train"]["epochs"]) == (0.001, 5)
    assert "kept from params.yaml: model=lenet5 train.learning_rate=0.001" in caplog.text

    assert cli.main(["params", "--reset", "train.epochs=5"]) == 0

    assert yaml.safe_load(params_file.read_text()) == compose("train.epochs=5")
    assert "dropped model.name = 'lenet5' (conf/: 'simple_cnn')" in caplog.text


def test_the_fewest_overrides_keep_what_params_yaml_holds() -> None:
    """Group options stand for many keys; keys the options do not explain follow."""
    lenet = compose("model=lenet5", "model.dropout_rate=0.2")
    assert overrides_that_keep(CONF, lenet, ["train.epochs=1,2"]).overrides == [
        "model=lenet5",
        "model.dropout_rate=0.2",
    ]
    preset = compose("experiment=mnist_fast", "train.epochs=3")
    assert overrides_that_keep(CONF, preset, []).overrides == [
        "experiment=mnist_fast",
        "train.epochs=3",
    ]
    added = compose()
    added["train"]["momentum"] = 0.9  # type: ignore[index]
    assert overrides_that_keep(CONF, added, []).overrides == ["+train.momentum=0.9"]
    # A group the user switches is theirs: only the values outside it are kept.
    assert overrides_that_keep(CONF, lenet, ["model=resnet"]).overrides == []
    assert overrides_that_keep(CONF, compose(), ["data=mnist"]).lost == []


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


def _queued(repo: Path) -> list[tuple[str, float]]:
    """(model.name, train.learning_rate) of each queued experiment, from `dvc exp show`."""
    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], repo).stdout)
    return sorted(
        (params["model"]["name"], params["train"]["learning_rate"])
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for revision in experiment["revs"]
        for params in [revision["data"]["params"]["params.yaml"]["data"]]
    )


def test_dvc_exp_run_stops_before_queueing_what_would_drop_a_committed_switch(
    repo: Path,
) -> None:
    """Through the real `dvc exp run --queue` (nothing trains): DVC imports hydra_plugins/
    right before it composes, while params.yaml is still the user's. A sweep over a committed
    lenet5 would have trained simple_cnn: it is refused with the command that keeps lenet5,
    and that command queues lenet5."""
    run_command(["cnn-pipeline", "params", "model=lenet5"], repo)
    run_command(["git", "commit", "-q", "-am", "lenet5"], repo)
    sweep = ["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=0.001,0.003"]

    refused = run_command(sweep, repo, check=False)

    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        "ERROR: cnn-pipeline: nothing was run or queued: params.yaml holds model=lenet5, which "
        "conf/ does not, and dvc exp run recomposes params.yaml from conf/ with only its -S. "
        "To keep them, run: dvc exp run --queue -S train.learning_rate=0.001,0.003 "
        "-S model=lenet5 (to drop them instead, first run `cnn-pipeline params --reset`)"
    ), refused.stderr
    assert "Queued" not in refused.stdout + refused.stderr
    assert _queued(repo) == []
    assert run_command(["git", "status", "--porcelain"], repo).stdout == ""

    run_command([*sweep, "-S", "model=lenet5"], repo)

    assert _queued(repo) == [("lenet5", 0.001), ("lenet5", 0.003)]


def test_dvc_exp_run_refuses_a_bad_value_of_a_sweep_before_queueing_any(repo: Path) -> None:
    bad = run_command(
        ["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=0.01,abc"], repo, check=False
    )
    assert bad.returncode != 0
    assert (
        "ERROR: cnn-pipeline: nothing was run or queued: the stages would refuse this "
        "params.yaml: params.yaml: train.learning_rate = 'abc' is invalid: Input should be a "
        "valid number"
    ) in bad.stderr
    assert _queued(repo) == []
