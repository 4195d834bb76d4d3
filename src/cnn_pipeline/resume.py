"""What an interrupted training leaves behind so that the next `dvc repro` resumes it.

DVC deletes a stage's outputs before it runs the stage again, and `dvc exp run --queue` runs
stages in a temporary copy of the repository, so the state lives in the real repository's
`.dvc/tmp/train-resume/<fingerprint>/`, which neither touches. The fingerprint covers
everything that defines the trained model (the params the train stage reads, the prepared
data, the package's source code): change any of them and training starts afresh, never
resuming another configuration. The folder is deleted once the stage has written its outputs.

    <fingerprint>/backup/           keras.callbacks.BackupAndRestore: weights, optimizer, epoch
    <fingerprint>/checkpoints/      one model file per finished epoch (models/checkpoints/)
    <fingerprint>/history.json      one row per finished epoch, in order
    <fingerprint>/mlflow_run.json   the MLflow run the training logs to, continued on resume
    <fingerprint>/lock              held while a training runs: a state nobody holds was
                                    interrupted (its MLflow run is then marked KILLED)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from cnn_pipeline.atomic import write_json

RESUME_DIR = Path(".dvc/tmp/train-resume")
PACKAGE_DIR = Path(__file__).resolve().parent


def fingerprint(params: Mapping[str, Any], data_files: Iterable[Path]) -> str:
    """A digest of the params, the prepared data files and every source file of the package."""
    return digest(params, [*sorted(data_files), *sorted(PACKAGE_DIR.rglob("*.py"))])


def digest(params: Mapping[str, Any] | None, files: Iterable[Path]) -> str:
    """16 hex digits of SHA-256 over the params (as sorted JSON) and each file's name and
    bytes, in the order given."""
    hashed = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in files:
        hashed.update(path.name.encode())
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                hashed.update(block)
    return hashed.hexdigest()[:16]


@dataclass(frozen=True)
class ResumeState:
    folder: Path

    @classmethod
    def for_training(cls, repo_root: Path, key: str) -> ResumeState:
        return cls(repo_root / RESUME_DIR / key)

    @property
    def backup_dir(self) -> Path:
        return self.folder / "backup"

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def history_file(self) -> Path:
        return self.folder / "history.json"

    @property
    def run_file(self) -> Path:
        return self.folder / "mlflow_run.json"

    def prepare(self) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def has_backup(self) -> bool:
        """True where an earlier training of the same configuration finished some epochs."""
        return (self.backup_dir / "training_metadata.json").is_file()

    def is_resumable(self) -> bool:
        """True where that training's backup can be read whole. `kill -9` during its write
        can leave it truncated (docs/benchmarks.md, "Interruptions"); Keras would then fail
        to load it on every later run."""
        if not self.has_backup():
            return False
        try:
            json.loads((self.backup_dir / "training_metadata.json").read_text(encoding="utf-8"))
            with h5py.File(self.backup_dir / "latest.weights.h5", "r") as weights:
                weights.visititems(_read_dataset)
        except (OSError, ValueError, KeyError):
            return False
        return True

    def history(self) -> list[dict[str, float]]:
        if not self.history_file.is_file():
            return []
        rows: list[dict[str, float]] = json.loads(self.history_file.read_text(encoding="utf-8"))
        return rows

    def save_history(self, rows: list[dict[str, float]]) -> None:
        write_json(rows, self.history_file)

    def run_id(self) -> str | None:
        if not self.run_file.is_file():
            return None
        run_id: str = json.loads(self.run_file.read_text(encoding="utf-8"))["run_id"]
        return run_id

    def save_run_id(self, run_id: str) -> None:
        write_json({"run_id": run_id}, self.run_file)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold this state's lock while training runs (the system releases it when the
        process dies, `kill -9` included)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "lock").open("a") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            yield


def _read_dataset(name: str, item: h5py.Group | h5py.Dataset) -> None:
    if isinstance(item, h5py.Dataset):
        item[()]  # reads it: a truncated file fails here


def interrupted_run_ids(repo_root: Path) -> list[str]:
    """The MLflow runs of trainings that were interrupted and are not running now (their
    state's lock is free): `kill -9` or a crash left them RUNNING in MLflow."""
    run_ids = []
    for folder in sorted((repo_root / RESUME_DIR).glob("*/")):
        state = ResumeState(folder)
        lock_file = folder / "lock"
        if not lock_file.is_file() or (run_id := state.run_id()) is None:
            continue
        with lock_file.open("a") as stream:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a training is running there now
                continue
            fcntl.flock(stream, fcntl.LOCK_UN)
        run_ids.append(run_id)
    return run_ids
