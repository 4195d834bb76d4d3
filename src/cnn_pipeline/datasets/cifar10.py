"""CIFAR-10 (Krizhevsky, 2009): 60,000 32x32 colour images in 10 classes.

Read from the "binary version" archive: fixed-length records of one label byte and
3,072 pixel bytes (1,024 red, then green, then blue, row by row). The Python version
of the archive is pickled, and nothing downloaded here is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnn_pipeline.datasets import Dataset, RawDataset
from cnn_pipeline.datasets.archive import extract_members
from cnn_pipeline.datasets.mirrors import (
    Checksum,
    RemoteFile,
    RetryPolicy,
    fetch,
    mirrors_in_effect,
)
from cnn_pipeline.errors import UserError

ARCHIVE = RemoteFile(
    "cifar-10-binary.tar.gz",
    (
        Checksum("md5", "c32a1d4ab5d03f1284b67883e8d87530"),
        Checksum("sha256", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    ),
)
MEMBER_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{index}.bin" for index in range(1, 6))
TEST_FILE = "test_batch.bin"
SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def fetch_all(
    mirrors: list[str],
    raw_dir: Path,
    policy: RetryPolicy | None = None,
    archive: RemoteFile = ARCHIVE,
) -> None:
    """Download and verify the archive, then extract its six batch files into raw_dir."""
    raw_dir.mkdir(parents=True)
    archive_path = raw_dir.parent / f".{raw_dir.name}.{archive.name}"
    try:
        fetch(archive, mirrors, archive_path, policy)
        wanted = {f"{MEMBER_DIR}/{name}" for name in (*TRAIN_FILES, TEST_FILE)}
        extract_members(archive_path, wanted, raw_dir)
    finally:
        archive_path.unlink(missing_ok=True)


def read_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Parse binary batch files into uint8 images (N, 32, 32, 3) and labels (N,)."""
    arrays = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} is missing: run `dvc repro download` first")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % RECORD_BYTES:
            raise UserError(
                f"{path} is not whole {RECORD_BYTES}-byte CIFAR records: "
                "run `dvc repro -f download`"
            )
        arrays.append(raw.reshape(-1, RECORD_BYTES))
    records = np.concatenate(arrays)
    labels = records[:, 0].copy()
    # (N, 3072) channel-major -> (N, 3, 32, 32) -> (N, 32, 32, 3)
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read(raw_dir: Path) -> RawDataset:
    batches = raw_dir / MEMBER_DIR
    images, labels = read_batches([batches / name for name in TRAIN_FILES])
    test_images, test_labels = read_batches([batches / TEST_FILE])
    return RawDataset(images, labels, CLASS_NAMES, test_images, test_labels)


DATASET = Dataset(
    fetch=lambda config, raw_dir, policy: fetch_all(
        mirrors_in_effect(config.mirrors, config.mirror), raw_dir, policy
    ),
    read=lambda config, raw_dir: read(raw_dir),
    has_own_test_set=True,
)
