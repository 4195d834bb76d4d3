"""Refuse, in one line, a Python that cannot run cnn-pipeline, before an environment is built.

`make` runs this with $(PYTHON) before `$(PYTHON) -m venv`: without it an unsupported Python
fails later, inside pip or uv, in a page of resolver output. The supported range is read from
pyproject.toml's `requires-python`, its one source. Written for any Python 3 (no tomllib, no
modern syntax), since the interpreter it judges may be old.
"""

import platform
import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def supported_range(pyproject_text):
    """(lowest, first unsupported) from `requires-python = ">=3.11.4,<3.14"`."""
    match = re.search(r'^requires-python\s*=\s*">=([\d.]+),\s*<([\d.]+)"', pyproject_text, re.M)
    if match is None:
        raise ValueError('pyproject.toml: expected requires-python = ">=X.Y.Z,<X.Y"')
    return tuple(int(part) for part in match.group(1).split(".")), tuple(
        int(part) for part in match.group(2).split(".")
    )


def problem(version, implementation, lowest, below):
    """None when this interpreter is supported, else one line saying why and what to do."""
    newest = (below[0], below[1] - 1)
    wanted = f"CPython {'.'.join(map(str, lowest))} to {'.'.join(map(str, newest))}"
    found = f"{implementation} {'.'.join(map(str, version))}"
    if implementation == "CPython" and lowest <= tuple(version) < below:
        return None
    return (
        f"{sys.executable} is {found}; cnn-pipeline needs {wanted}: install one "
        f"(docs/installation.md) and name it, e.g. `make PYTHON=python3.12 pipeline`"
    )


def main():
    lowest, below = supported_range(PYPROJECT.read_text(encoding="utf-8"))
    message = problem(tuple(sys.version_info[:3]), platform.python_implementation(), lowest, below)
    if message is not None:
        sys.exit(message)


if __name__ == "__main__":
    main()
