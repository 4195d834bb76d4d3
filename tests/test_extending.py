"""docs/extending.md, done as it says: its four files written into a fresh copy of the
repository, read from the page's own code blocks, then `dvc repro` as a user runs it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import keras
import pytest
import yaml

from conftest import REPO_ROOT, copy_repository, run_command

pytestmark = pytest.mark.e2e

PAGE = REPO_ROOT / "docs" / "extending.md"
OUTPUT_FOLDERS = ("data", "models", "metrics", "reports")


def page_files() -> dict[str, str]:
    """Each code block with a `title="PATH"`: PATH -> its text."""
    blocks = re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```$', PAGE.read_text(), re.M | re.S)
    return dict(blocks)


def page_error_line() -> str:
    """The one line the page says a name without a module prints."""
    section = PAGE.read_text().split("## Mistakes", 1)[1]
    (line,) = re.findall(r"^```text\n(.*?)\n^```$", section, re.M | re.S)
    return str(line)


def running_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def output_digests(repo: Path) -> dict[str, str]:
    return {
        path.relative_to(repo).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in OUTPUT_FOLDERS
        for path in sorted((repo / folder).rglob("*"))
        if path.is_file() and path.name != "params_check.json"
    }


def test_the_page_names_exactly_the_files_it_writes() -> None:
    files = page_files()
    assert sorted(files) == [
        "conf/data/digits_small.yaml",
        "conf/model/mobile_cnn.yaml",
        "src/cnn_pipeline/datasets/digits_small.py",
        "src/cnn_pipeline/models/mobile_cnn.py",
    ]
    table = PAGE.read_text().split("## How names are found")[0]
    assert all(f"| `{name}` |" in table for name in files)
    assert not any((REPO_ROOT / name).exists() for name in files), "the example is in the repo"


def test_a_network_and_a_dataset_added_as_the_page_says(tmp_path: Path) -> None:
    repo = copy_repository(tmp_path / "repo")
    for name, text in page_files().items():
        (repo / name).write_text(text)

    def run(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # The copy's own code, as a clone's environment (installed from its src/) imports it.
        return run_command(list(arguments), repo, check=check, PYTHONPATH=str(repo / "src"))

    # Run it: the page's commands, with 2 epochs.
    run("cnn-pipeline", "params", "model=mobile_cnn", "data=digits_small", "train.epochs=2")
    first = run("dvc", "repro")
    assert running_stages(first.stdout) == [
        "check", "download", "preprocess", "train", "evaluate", "report"
    ]  # fmt: skip
    info = json.loads((repo / "data" / "prepared" / "dataset.json").read_text())
    assert info["class_names"] == ["0", "1", "2", "3", "4"]
    model = keras.saving.load_model(str(repo / "models" / "model.keras"))
    separable = {
        layer.name for layer in model.layers if isinstance(layer, keras.layers.SeparableConv2D)
    }
    assert separable == {"separable1", "separable2", "separable3"}
    fields = json.loads((repo / "reports" / "receptive_fields.json").read_text())["layers"]
    listed = {row["layer"] for row in fields if row["layer_type"] == "SeparableConv2D"}
    assert listed == separable
    assert (repo / "reports" / "first_layer_filters.png").stat().st_size > 0

    # Python's bytecode caches in the folder deps change nothing.
    cache = repo / "src" / "cnn_pipeline" / "models" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "mobile_cnn.cpython-311.pyc").write_bytes(b"bytecode")
    assert running_stages(run("dvc", "repro").stdout) == []

    # Edit it: the network's module changes, train runs again and the data stages do not.
    module = repo / "src" / "cnn_pipeline" / "models" / "mobile_cnn.py"
    module.write_text(module.read_text().replace("filters, 3, padding", "filters, 5, padding"))
    edited = running_stages(run("dvc", "repro", "train").stdout)
    assert "train" in edited
    assert not {"download", "preprocess"} & set(edited)

    # Mistakes: a name without a module stops in the check stage, with nothing deleted.
    good = (repo / "params.yaml").read_text()
    before = output_digests(repo)
    for section, name in (("model", "mobile_cn"), ("data", "digits_smal")):
        params = yaml.safe_load(good)
        params[section]["name"] = name
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = run("dvc", "repro", check=False)
        assert result.returncode != 0
        assert running_stages(result.stdout) == ["check"]
        output = (result.stdout + result.stderr).splitlines()
        errors = [line for line in output if line.startswith("cnn-pipeline ")]
        assert len(errors) == 1 and f"{section}.name = {name!r} is invalid" in errors[0]
        if section == "model":
            assert errors[0] == page_error_line()
        assert output_digests(repo) == before
    (repo / "params.yaml").write_text(good)
