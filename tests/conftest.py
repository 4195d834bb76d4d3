"""Shared fixtures: the repository, the real MNIST files, a local HTTP mirror, a pipeline copy."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cnn_pipeline.config import DataConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"
BIN_DIR = Path(sys.executable).parent  # the environment's dvc and cnn-pipeline
sys.path.insert(0, str(REPO_ROOT / "scripts"))  # scripts/team_server.py, for tests/test_team.py


def command_environment(**extra: str) -> dict[str, str]:
    """The environment for `dvc` and `cnn-pipeline` subprocesses: this venv first on PATH,
    no MLflow store from the caller's shell, quiet TensorFlow."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    environment["PATH"] = f"{BIN_DIR}{os.pathsep}{environment.get('PATH', '')}"
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    environment.update(extra)
    return environment


def run_command(
    arguments: list[str], cwd: Path, check: bool = True, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        arguments, cwd=cwd, env=command_environment(**extra_env), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(arguments)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (see ../shared/datasets/mnist/README.md)")
    return MNIST_DIR


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve_directory() -> Iterator[object]:
    """Call it with a folder; it serves that folder on 127.0.0.1 and returns the base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def copy_repository(destination: Path) -> Path:
    """Copy the repository's files (as a fresh clone would have them) into a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for relative in filter(None, listed):
        source = REPO_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    for arguments in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "copy"],
    ):
        run_command(arguments, destination, **git)
    return destination


def data_config(name: str, **changes: object) -> DataConfig:
    """The data section of conf/data/NAME.yaml, with `changes` applied."""
    section = yaml.safe_load((REPO_ROOT / "conf" / "data" / f"{name}.yaml").read_text())
    config = DataConfig.model_validate({**section, **changes})
    config.check_consistency()
    return config
