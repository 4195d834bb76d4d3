"""Each DVC stage's source files, read from the code: the dvc.yaml deps that cannot drift.

A stage depends on every module its command runs and on no other, so that fixing an image
reader re-runs preprocess and editing a figure does not retrain. Starting from the module a
stage's command runs, this follows every `cnn_pipeline` import (function-level ones too, and
the `__init__.py` of each package on the way) to the set of files.

A package that registers its own modules (its `__init__.py` imports cnn_pipeline.discovery:
models/ and datasets/) imports every module in its folder at run time, by names no import
statement spells: a stage that imports such a package depends on its whole folder, written as
one directory dep (DVC hashes every file in it), so a new network or dataset module re-runs
the stages that use it without anyone editing dvc.yaml.

`cnn-pipeline STAGE` runs cli.py: its module-level code and `main`, then only that stage's
function in `cli.STAGES`; the other stages' functions, `params` and `predict` never run, so
their imports are not that stage's deps (cli.py itself is: an edit to it re-runs every stage
it serves). `python -m MODULE` runs the whole module. Imports under `if TYPE_CHECKING:` never
run and are left out. Other names built at run time (`importlib.import_module(f"...")`)
cannot be read this way: the project has none besides discovery.py's, keep it so.

A developer's tool, outside the installed package:

    python tools/stage_deps.py           # rewrite dvc.yaml's source deps (comments kept)
    python tools/stage_deps.py --check   # exit 1, printing what differs
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "cnn_pipeline"
SOURCE_ROOT = Path("src")  # relative to the repository root, as dvc.yaml names the deps
CLI_MODULE = f"{PACKAGE}.cli"
CLI_SCRIPT = "cnn-pipeline"  # [project.scripts] in pyproject.toml: cnn_pipeline.cli:main
CLI_ENTRY_FUNCTION = "main"
DISCOVERY_MODULE = f"{PACKAGE}.discovery"  # a package importing it loads all its modules
COMMAND = "python tools/stage_deps.py"


@dataclass(frozen=True)
class Entry:
    """What a stage's command runs: a module, and in it one function or (None) all of it."""

    module: str
    function: str | None = None


def module_file(source_root: Path, module: str) -> Path | None:
    """The file of a module under source_root: a.b -> a/b.py or a/b/__init__.py."""
    base = source_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: Iterable[ast.AST], skip_functions: bool) -> Iterator[ast.AST]:
    """Every node below `nodes` that runs, skipping `if TYPE_CHECKING:` bodies and, when
    asked, the bodies of functions (they run only when called)."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.orelse, skip_functions)
            continue
        if skip_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        yield node
        yield from _walk(ast.iter_child_nodes(node), skip_functions)


def _imported_modules(
    source_root: Path, nodes: Iterable[ast.AST], module: str, is_package: bool
) -> set[str]:
    """The project modules the import statements among `nodes` load, parent packages included."""
    found: set[str] = set()
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import: `from . import x` in a.b (a module) is from package a.
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names = [base]
            # `from package import name` loads package.name when that is a module.
            names += [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != PACKAGE:
                continue
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                prefix = ".".join(parts[:end])
                if module_file(source_root, prefix) is not None:
                    found.add(prefix)
    return found


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def import_closure(source_root: Path, entries: Iterable[Entry]) -> set[Path]:
    """Every project file that running `entries` can execute."""
    files: set[Path] = set()
    pending: list[str] = []
    for entry in entries:
        path = module_file(source_root, entry.module)
        if path is None:
            raise ValueError(f"module {entry.module} not found under {source_root}")
        # Running a.b.c (python -m, or a console script's import) runs a and a.b first.
        parts = entry.module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        files.add(path)
        tree = _parse(path)
        nodes: list[ast.AST] = list(_walk(tree.body, skip_functions=entry.function is not None))
        if entry.function is not None:
            for function_name in (CLI_ENTRY_FUNCTION, entry.function):
                function = next(
                    (
                        node
                        for node in tree.body
                        if isinstance(node, ast.FunctionDef) and node.name == function_name
                    ),
                    None,
                )
                if function is None:
                    raise ValueError(f"{path} has no function {function_name}")
                nodes += list(_walk(function.body, skip_functions=False))
        pending += sorted(
            _imported_modules(source_root, nodes, entry.module, path.name == "__init__.py")
        )
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(source_root, module)
        if path is None:
            continue
        files.add(path)
        nodes = list(_walk(_parse(path).body, skip_functions=False))
        imported = _imported_modules(source_root, nodes, module, path.name == "__init__.py")
        if path.name == "__init__.py" and DISCOVERY_MODULE in imported:
            imported |= {f"{module}.{file.stem}" for file in path.parent.glob("*.py")}
        pending += sorted(imported - seen)
    return files


def discovering_packages(source_root: Path, files: Iterable[Path]) -> set[Path]:
    """The folders, among those of `files`, of packages that import all their own modules."""
    folders = set()
    for path in files:
        if path.name != "__init__.py":
            continue
        module = ".".join(path.parent.relative_to(source_root).parts)
        nodes = _walk(_parse(path).body, skip_functions=False)
        if DISCOVERY_MODULE in _imported_modules(source_root, nodes, module, True):
            folders.add(path.parent)
    return folders


def cli_stage_functions(source_root: Path) -> dict[str, str]:
    """`cnn-pipeline NAME` -> the function cli.STAGES runs for it, read from cli.py."""
    path = module_file(source_root, CLI_MODULE)
    if path is None:
        raise ValueError(f"{CLI_MODULE} not found under {source_root}")
    for node in _parse(path).body:
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "STAGES":
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if not isinstance(value, ast.Dict):
                raise ValueError(f"{path}: STAGES must be a dict literal")
            functions = {}
            for key, entry in zip(value.keys, value.values, strict=True):
                function = entry.elts[0] if isinstance(entry, ast.Tuple) else None
                if not (isinstance(key, ast.Constant) and isinstance(function, ast.Name)):
                    raise ValueError(f"{path}: STAGES must map names to (function, help)")
                functions[str(key.value)] = function.id
            return functions
    raise ValueError(f"{path} has no STAGES dict")


def command_entry(command: str, source_root: Path) -> Entry:
    """The module (and function) a dvc.yaml `cmd` runs."""
    words = shlex.split(command)
    if len(words) >= 2 and words[0] == CLI_SCRIPT:
        functions = cli_stage_functions(source_root)
        if words[1] not in functions:
            raise ValueError(f"`{command}`: cli.STAGES has no {words[1]!r}")
        return Entry(CLI_MODULE, functions[words[1]])
    if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] == "-m":
        return Entry(words[2])
    raise ValueError(
        f"`{command}`: cannot tell which code it runs; use `{CLI_SCRIPT} STAGE` or "
        f"`python -m {PACKAGE}.MODULE`"
    )


def is_source(dep: str) -> bool:
    return dep.startswith(f"{SOURCE_ROOT.as_posix()}/{PACKAGE}")


def expected_source_deps(stages: dict[str, Any], repo_root: Path) -> dict[str, list[str]]:
    """Stage name -> its source files and folders, relative to repo_root, sorted: the files of
    a package that imports all its own modules are its folder."""
    source_root = repo_root / SOURCE_ROOT
    expected = {}
    for name, stage in stages.items():
        files = import_closure(source_root, [command_entry(stage["cmd"], source_root)])
        folders = discovering_packages(source_root, files)
        deps = {path for path in files if path.parent not in folders} | folders
        expected[name] = sorted(path.relative_to(repo_root).as_posix() for path in deps)
    return expected


def _load(dvc_file: Path) -> tuple[Any, Any]:
    from ruamel.yaml import YAML  # DVC's own dependency: keeps dvc.yaml's comments and layout

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml, yaml.load(dvc_file.read_text(encoding="utf-8"))


def differences(dvc_file: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Stage -> (source deps in dvc.yaml, source deps its code imports), where they differ."""
    _, document = _load(dvc_file)
    expected = expected_source_deps(document["stages"], dvc_file.parent)
    found = {}
    for name, stage in document["stages"].items():
        declared = sorted(str(dep) for dep in stage.get("deps", []) if is_source(str(dep)))
        if declared != expected[name]:
            found[name] = (declared, expected[name])
    return found


def rewrite(dvc_file: Path) -> list[str]:
    """Replace each stage's source deps in dvc.yaml with its import closure; other deps (data,
    models) stay, after them. Returns the names of the stages changed."""
    yaml, document = _load(dvc_file)
    expected = expected_source_deps(document["stages"], dvc_file.parent)
    changed = []
    for name, stage in document["stages"].items():
        deps = stage.setdefault("deps", [])
        others = [dep for dep in deps if not is_source(str(dep))]
        if [str(dep) for dep in deps] != [*expected[name], *others]:
            deps[:] = [*expected[name], *others]
            changed.append(name)
    if changed:
        from cnn_pipeline.atomic import atomic_path

        with atomic_path(dvc_file) as staged, staged.open("w", encoding="utf-8") as stream:
            yaml.dump(document, stream)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Make each stage's source deps in dvc.yaml the files its command imports.",
    )
    parser.add_argument("--dvc-file", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--check", action="store_true", help="only report; exit 1 on a difference")
    arguments = parser.parse_args(argv)
    if arguments.check:
        found = differences(arguments.dvc_file)
        for name, (declared, expected) in found.items():
            missing = sorted(set(expected) - set(declared))
            extra = sorted(set(declared) - set(expected))
            print(f"{name}: missing {missing}, not imported {extra}")
        if found:
            print(f"fix: {COMMAND}")
        return 1 if found else 0
    changed = rewrite(arguments.dvc_file)
    print(f"{arguments.dvc_file}: source deps of {changed or 'no stage'} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
