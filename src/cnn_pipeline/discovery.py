"""Registries filled by the package's own modules: a network or a dataset is one file.

A module in `cnn_pipeline/models/` that declares `NETWORK`, or in `cnn_pipeline/datasets/`
that declares `DATASET`, is registered under its file's name (`models/my_net.py` is
`model.name: my_net`); modules without the attribute are helpers. Only modules inside the
package are imported, never a name read from params.yaml, so the names allowed stay as fixed
as a hand-written list. Every module of both folders is imported by validation (the check
stage), so they must not import TensorFlow or Keras at import time: builders import Keras
inside their functions.

A stage that imports `cnn_pipeline.models` or `cnn_pipeline.datasets` depends in dvc.yaml on
the whole folder (tools/stage_deps.py writes it so), so a new or edited module re-runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

from cnn_pipeline.errors import UserError, nearest

EXTENDING_DOC = "docs/extending.md"


def declared(package: ModuleType, attribute: str) -> dict[str, Any]:
    """Module name -> what it declares as `attribute`, for each module of `package` that
    declares it, sorted by name. Modules whose name starts with `_` are not imported."""
    found: dict[str, Any] = {}
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        if hasattr(module, attribute):
            found[module_info.name] = getattr(module, attribute)
    return found


def unknown_name(
    key: str, name: object, known: list[str], package: ModuleType, attribute: str
) -> UserError:
    """The one-line error for a `model.name`/`data.name` that no module declares."""
    allowed = ", ".join(repr(option) for option in known)
    match = nearest(name, known) if isinstance(name, str) else None
    hint = f"did you mean {match!r}? " if match else ""
    folder = Path(package.__path__[0])
    where = f"src/cnn_pipeline/{folder.name}/"
    module_file = folder / f"{name}.py"
    if isinstance(name, str) and module_file.is_file():
        return UserError(
            f"params.yaml: {key} = {name!r} is invalid: {where}{name}.py declares no "
            f"{attribute}: add one (see {EXTENDING_DOC}), or choose one of {allowed}"
        )
    return UserError(
        f"params.yaml: {key} = {name!r} is invalid: {hint}Input should be one of {allowed} "
        f"(a module in {where} adds one: see {EXTENDING_DOC})"
    )
