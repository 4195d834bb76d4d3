"""Shared fixtures: the repository, the real MNIST and Fashion-MNIST files, a local HTTP
mirror, a pipeline copy."""

from __future__ import annotations

import fcntl
import functools
import http.server
import os
import shutil
import socketserver
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cnn_pipeline import datasets
from cnn_pipeline.config import DataConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where the four real MNIST .gz files are, for the tests and benchmarks that train on them.
MNIST_DIR_VARIABLE = "CNN_PIPELINE_MNIST_DIR"
MNIST_DIR = Path(
    os.environ.get(MNIST_DIR_VARIABLE) or REPO_ROOT.parent / "shared" / "datasets" / "mnist"
)
# The same for the four real Fashion-MNIST .gz files (byte-identical to the published ones).
FASHION_MNIST_DIR_VARIABLE = "CNN_PIPELINE_FASHION_MNIST_DIR"
FASHION_MNIST_DIR = Path(
    os.environ.get(FASHION_MNIST_DIR_VARIABLE)
    or REPO_ROOT.parent / "shared" / "datasets" / "fashion_mnist"
)
BIN_DIR = Path(sys.executable).parent  # the environment's dvc and cnn-pipeline
sys.path.insert(0, str(REPO_ROOT / "scripts"))  # scripts/team_server.py, for tests/test_team.py


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with end-to-end tests first, each module's tests kept together and in order:
    pytest-xdist hands whole modules to its workers in this order (`make test`), so the
    longest start first and the workers finish together."""
    e2e_modules = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in e2e_modules)


def command_environment(**extra: str) -> dict[str, str]:
    """The environment for `dvc` and `cnn-pipeline` subprocesses: this venv first on PATH,
    no MLflow store from the caller's shell, quiet TensorFlow."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    # As from a user's shell: tests that run cli.main in this process leave the KERAS_BACKEND
    # it picked in os.environ, which would otherwise reach every later stage started here.
    environment.pop("KERAS_BACKEND", None)
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


def _real_dataset(folder: Path, name: str, variable: str) -> Path:
    """The folder of a dataset's four real .gz files, or a skip that says where to get them."""
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"real {name} not found at {folder} (see ../shared/datasets/{folder.name}/README.md, "
            f"or set {variable})"
        )
    return folder


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _real_dataset(MNIST_DIR, "MNIST", MNIST_DIR_VARIABLE)


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    return _real_dataset(FASHION_MNIST_DIR, "Fashion-MNIST", FASHION_MNIST_DIR_VARIABLE)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def start_http_server(
    handler: Callable[..., socketserver.BaseRequestHandler],
) -> http.server.ThreadingHTTPServer:
    """Serve `handler` on 127.0.0.1 (a free port) from a daemon thread; the caller stops it
    with shutdown() and server_close(), or leaves it to the end of the process."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # shutdown() waits for the next poll: 0.05 s, not the default 0.5 s, per server stopped.
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


def base_url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def serve_folder(directory: Path) -> http.server.ThreadingHTTPServer:
    """Serve the files of `directory` over HTTP, quietly (tests and benchmarks' mirrors)."""
    return start_http_server(functools.partial(_QuietHandler, directory=str(directory)))


@pytest.fixture
def serve_directory() -> Iterator[Callable[[Path], str]]:
    """Call it with a folder; it serves that folder on 127.0.0.1 and returns the base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        servers.append(serve_folder(directory))
        return base_url(servers[-1])

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def write_huge_png(path: Path, width: int, height: int) -> None:
    """A valid black 1-bit PNG of width x height pixels, a few kilobytes on disk: past
    Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89,478,485 pixels) Pillow
    warns, past twice that it refuses."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    row = bytes(1 + (width + 7) // 8)  # filter byte "none", then the row's bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


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


@dataclass(frozen=True)
class TrainedPipeline:
    repo: Path  # where `dvc repro` ran; one test module goes on using it (test_pipeline.py)
    repro_output: str  # what that `dvc repro` printed on stdout
    repro_errors: str  # ...and on stderr, where the stages log
    snapshot: Path  # an untouched copy taken right after: copy it with `copy_trained`


@pytest.fixture(scope="session")
def trained_pipeline(tmp_path_factory: pytest.TempPathFactory) -> TrainedPipeline:
    """The default pipeline at 2 epochs, run once per test session by `dvc repro` in a fresh
    copy of the repository and committed there, so that several test modules start from a
    trained one. `make test` runs the modules in parallel processes (pytest-xdist): the first
    to need it trains it, under a lock, and the others wait for it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers: each has its own folder under it
    folder = base / "trained-pipeline"
    repo, snapshot = folder / "repo", folder / "snapshot"
    output_file, errors_file = folder / "repro-stdout", folder / "repro-stderr"
    with (base / "trained-pipeline.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not output_file.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            copy_repository(repo)
            run_command(["cnn-pipeline", "params", "train.epochs=2"], repo)
            result = run_command(["dvc", "repro"], repo)
            shutil.copytree(repo, snapshot, symlinks=True)
            errors_file.write_text(result.stderr, encoding="utf-8")
            output_file.write_text(result.stdout, encoding="utf-8")  # last: the mark of done
    output, errors = (file.read_text(encoding="utf-8") for file in (output_file, errors_file))
    return TrainedPipeline(repo, output, errors, snapshot)


def copy_trained(pipeline: TrainedPipeline, destination: Path, keep_mlflow: bool = True) -> Path:
    """A copy of the trained pipeline, committed as it is. Its MLflow experiment keeps its
    artifacts in the snapshot's folder: without keep_mlflow the store is left behind, and the
    next training creates a fresh one of the copy's own."""
    shutil.copytree(pipeline.snapshot, destination, symlinks=True)
    if not keep_mlflow:
        (destination / "mlflow.db").unlink()
        shutil.rmtree(destination / "mlartifacts", ignore_errors=True)
    git = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid"}
    git |= {"GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
    run_command(["git", "add", "-A"], destination, **git)
    run_command(["git", "commit", "-q", "-m", "trained, 2 epochs"], destination, **git)
    return destination


def data_config(name: str, **changes: object) -> DataConfig:
    """The data section of conf/data/NAME.yaml, with `changes` applied."""
    section = yaml.safe_load((REPO_ROOT / "conf" / "data" / f"{name}.yaml").read_text())
    return datasets.data_config({"data": {**section, **changes}})
