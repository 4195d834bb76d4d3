"""Every CPython from 3.11.4 to 3.13 is supported: the lock covers each of them with wheels,
and `make` refuses any other Python in one line before it builds an environment."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO_ROOT

SUPPORTED = ("3.11", "3.12", "3.13")


def _check_python() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_python", REPO_ROOT / "tools" / "check_python.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_supported_range_is_read_from_requires_python() -> None:
    check = _check_python()
    lowest, below = check.supported_range((REPO_ROOT / "pyproject.toml").read_text())
    assert (lowest, below) == ((3, 11, 4), (3, 14))
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    assert lock["requires-python"] == ">=3.11.4, <3.14"  # uv.lock resolved for that range


@pytest.mark.parametrize(
    ("version", "implementation", "accepted"),
    [
        ((3, 11, 2), "CPython", False),  # Debian 12's python3: tarfile has no data filter
        ((3, 11, 4), "CPython", True),
        ((3, 12, 1), "CPython", True),
        ((3, 13, 9), "CPython", True),
        ((3, 14, 0), "CPython", False),  # tensorflow 2.21 publishes no 3.14 wheels
        ((3, 10, 13), "CPython", False),
        ((3, 12, 1), "PyPy", False),
    ],
)
def test_unsupported_python_gets_one_line_naming_the_range_and_the_fix(
    version: tuple[int, int, int], implementation: str, accepted: bool
) -> None:
    check = _check_python()
    message = check.problem(version, implementation, (3, 11, 4), (3, 14))
    if accepted:
        assert message is None
    else:
        assert "\n" not in message
        assert "CPython 3.11.4 to 3.13" in message
        assert "make PYTHON=python3.12 pipeline" in message


def test_this_python_passes_the_check() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "check_python.py")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_an_old_python_found_here_is_refused_in_one_line() -> None:
    """Debian 12's /usr/bin/python3.11 is 3.11.2, without tarfile's data filter."""
    old = shutil.which("python3.11", path="/usr/bin")
    if old is None:
        pytest.skip("no /usr/bin/python3.11 here")
    probe = [old, "-c", "import sys; sys.exit(sys.version_info >= (3, 11, 4))"]
    if subprocess.run(probe).returncode != 0:
        pytest.skip(f"{old} is 3.11.4 or later")
    result = subprocess.run(
        [old, str(REPO_ROOT / "tools" / "check_python.py")], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "needs CPython 3.11.4 to 3.13" in result.stderr


def _wheel_fits(filename: str, minor: str) -> bool:
    """Whether a wheel installs on CPython 3.<minor> on x86-64 Linux."""
    python_tags, abi, platform = filename.removesuffix(".whl").split("-")[-3:]
    if platform != "any" and not ("linux" in platform and "x86_64" in platform):
        return False
    for tag in python_tags.split("."):
        if tag.startswith(("py3", "py2")) or tag == f"cp3{minor}":
            return True
        if abi == "abi3" and tag.startswith("cp3") and int(tag[3:]) <= int(minor):
            return True
    return False


@pytest.mark.parametrize("python", SUPPORTED)
def test_every_locked_package_has_a_wheel_for_each_supported_python(python: str) -> None:
    """`uv sync` on Linux with any supported Python installs wheels only (nothing to build);
    sdist-only packages are pure Python."""
    minor = python.split(".")[1]
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    without = []
    for package in lock["package"]:
        wheels = [wheel["url"].rsplit("/", 1)[1] for wheel in package.get("wheels", [])]
        if package["name"] == "pywin32" or not wheels:  # Windows only; sdists
            continue
        if not any(_wheel_fits(wheel, minor) for wheel in wheels):
            without.append(package["name"])
    assert without == []
    tensorflow = next(package for package in lock["package"] if package["name"] == "tensorflow")
    assert any(
        f"-cp3{minor}-cp3{minor}-manylinux" in wheel["url"] for wheel in tensorflow["wheels"]
    )


def test_makefile_checks_the_python_before_creating_the_environment() -> None:
    makefile = Path(REPO_ROOT / "Makefile").read_text()
    assert makefile.index("tools/check_python.py") < makefile.index("-m venv")
