"""Each stage's source deps in dvc.yaml are exactly the files its command imports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("stage_deps", REPO_ROOT / "tools" / "stage_deps.py")
assert _spec is not None and _spec.loader is not None
stage_deps = sys.modules["stage_deps"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage_deps)
Entry, differences = stage_deps.Entry, stage_deps.differences
expected_source_deps, import_closure = stage_deps.expected_source_deps, stage_deps.import_closure


def test_dvc_yaml_source_deps_are_each_stages_import_closure() -> None:
    found = differences(REPO_ROOT / "dvc.yaml")
    assert not found, (
        "dvc.yaml's source deps differ from what each stage imports; run "
        "`python tools/stage_deps.py` to rewrite them:\n"
        + "\n".join(
            f"  {name}: missing {sorted(set(want) - set(have))}, "
            f"not imported {sorted(set(have) - set(want))}"
            for name, (have, want) in found.items()
        )
    )


def test_a_figure_module_is_no_dependency_of_training() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    deps = expected_source_deps(stages, REPO_ROOT)
    figures = {dep for dep in deps["report"] if "/figures/" in dep}
    assert "src/cnn_pipeline/figures/curves.py" in figures
    assert not figures & set(deps["train"])
    assert "src/cnn_pipeline/stages/train.py" not in deps["report"]
    # cli.py's functions for the other stages never run: their imports are not deps.
    assert "src/cnn_pipeline/stages/train.py" not in deps["download"]
    assert "src/cnn_pipeline/cli.py" not in deps["check"]
    # What issue 11 found missing: imported, some of them only inside functions.
    assert {
        "src/cnn_pipeline/accelerators.py",
        "src/cnn_pipeline/config.py",
        "src/cnn_pipeline/models",  # the whole folder: its modules are found at run time
    } <= set(deps["train"])
    assert "src/cnn_pipeline/datasets" in deps["preprocess"]
    assert not any(dep.startswith("src/cnn_pipeline/models/") for dep in deps["train"])
    # The check stage validates model and data names against both registries.
    assert {"src/cnn_pipeline/models", "src/cnn_pipeline/datasets"} <= set(deps["check"])
    assert "src/cnn_pipeline/trained_model.py" in deps["evaluate"]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "cnn_pipeline" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_closure_follows_lazy_imports_packages_and_only_the_stage_run(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "__init__.py": "",
            "cli.py": (
                "from cnn_pipeline import shared\n"
                "def _first():\n    from cnn_pipeline.stages import first\n"
                "def _second():\n    import cnn_pipeline.stages.second\n"
                "def _predict():\n    from cnn_pipeline import predict\n"
                "STAGES = {'first': (_first, 'help'), 'second': (_second, 'help')}\n"
                "def main():\n    pass\n"
            ),
            "shared.py": "",
            "predict.py": "",
            "stages/__init__.py": "",
            "stages/first.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from cnn_pipeline import typing_only\n"
                "def run():\n    from ..figures import curves\n"
            ),
            "stages/second.py": "from cnn_pipeline.figures import draw\n",
            "figures/__init__.py": "def draw():\n    pass\n",
            "figures/curves.py": "",
            "typing_only.py": "",
        },
    )

    def closure(entry: Entry) -> set[str]:
        return {p.relative_to(tmp_path).as_posix() for p in import_closure(tmp_path, [entry])}

    common = {"cnn_pipeline/__init__.py", "cnn_pipeline/cli.py", "cnn_pipeline/shared.py"}
    assert closure(Entry("cnn_pipeline.cli", "_first")) == common | {
        "cnn_pipeline/stages/__init__.py",
        "cnn_pipeline/stages/first.py",
        "cnn_pipeline/figures/__init__.py",
        "cnn_pipeline/figures/curves.py",
    }
    assert closure(Entry("cnn_pipeline.cli", "_second")) == common | {
        "cnn_pipeline/stages/__init__.py",
        "cnn_pipeline/stages/second.py",
        "cnn_pipeline/figures/__init__.py",  # `draw` is a name in it, not a module
    }
    assert closure(Entry("cnn_pipeline.stages.second")) == {
        "cnn_pipeline/__init__.py",
        "cnn_pipeline/stages/__init__.py",
        "cnn_pipeline/stages/second.py",
        "cnn_pipeline/figures/__init__.py",
    }


def test_closure_holds_every_module_python_loads_for_a_stage() -> None:
    """What Python really loads when the evaluate stage's modules are imported is among its
    deps: the static reading misses no import."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    deps = set(expected_source_deps(stages, REPO_ROOT)["evaluate"])
    script = (
        "import json, sys\n"
        "import cnn_pipeline.cli, cnn_pipeline.stages.evaluate, cnn_pipeline.tracking\n"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.split('.')[0] == 'cnn_pipeline')))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
    )
    assert loaded
    assert {Path(file).resolve().relative_to(REPO_ROOT).as_posix() for file in loaded} <= deps


def test_a_package_that_finds_its_own_modules_is_a_folder_dep(tmp_path: Path) -> None:
    """A new module in models/ is imported by name at run time: no import statement names
    it, so the stage depends on the folder, and on what the folder's modules import."""
    _write(
        tmp_path / "src",
        {
            "__init__.py": "",
            "discovery.py": "",
            "helper.py": "",
            "runner.py": "from cnn_pipeline import models\n",
            "models/__init__.py": "from cnn_pipeline import discovery\n",
            "models/new_network.py": "from cnn_pipeline import helper\n",
        },
    )
    (tmp_path / "src" / "cnn_pipeline" / "unused.py").write_text("")
    stages = {"run": {"cmd": "python -m cnn_pipeline.runner"}}
    assert expected_source_deps(stages, tmp_path)["run"] == [
        "src/cnn_pipeline/__init__.py",
        "src/cnn_pipeline/discovery.py",
        "src/cnn_pipeline/helper.py",
        "src/cnn_pipeline/models",
        "src/cnn_pipeline/runner.py",
    ]


def test_check_stage_deps_hold_every_module_its_validation_loads() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    deps = expected_source_deps(stages, REPO_ROOT)["check"]
    script = (
        "import json, sys\n"
        "from cnn_pipeline.stages import check\n"
        "check.check(check.paths.PARAMS_FILE, check.Path.cwd())\n"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.split('.')[0] == 'cnn_pipeline')))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for file in loaded:
        relative = Path(file).resolve().relative_to(REPO_ROOT).as_posix()
        assert any(relative == dep or relative.startswith(f"{dep}/") for dep in deps), relative
    assert "src/cnn_pipeline/models/simple_cnn.py" in {
        Path(file).resolve().relative_to(REPO_ROOT).as_posix() for file in loaded
    }
