"""MNIST: the four canonical gzip IDX files, fetched from a list of mirrors.

Checksums are of the decompressed IDX content, so a mirror that recompressed the files
(different .gz bytes, same images) still passes, while any change to the images fails.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnn_pipeline.datasets import RawDataset
from cnn_pipeline.datasets.http import ChecksumMismatch, fetch_from_mirrors
from cnn_pipeline.errors import UserError

# SHA-256 of each file's decompressed content (identical to the canonical MNIST files).
DECOMPRESSED_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}
CLASS_NAMES = tuple(str(digit) for digit in range(10))
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST uses


def decompressed_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verifier(file_name: str) -> Callable[[Path], None]:
    expected = DECOMPRESSED_SHA256[file_name]

    def verify(path: Path) -> None:
        try:
            actual = decompressed_sha256(path)
        except (OSError, EOFError) as error:
            raise ChecksumMismatch(f"not a complete gzip file ({error})") from None
        if actual != expected:
            raise ChecksumMismatch(
                f"checksum mismatch: expected SHA-256 {expected} of the content, got {actual}"
            )

    return verify


def fetch(mirrors: list[str], raw_dir: Path) -> None:
    if not mirrors:
        raise UserError("params.yaml: data.mirrors is empty: list at least one MNIST mirror URL")
    raw_dir.mkdir(parents=True)
    for file_name in DECOMPRESSED_SHA256:
        failures = fetch_from_mirrors(file_name, mirrors, raw_dir / file_name, _verifier(file_name))
        if not (raw_dir / file_name).is_file():
            raise UserError(
                f"could not download {file_name} from any mirror in data.mirrors; tried "
                + "; ".join(failures)
                + ". Check the mirrors, or use `data=digits`, which works offline"
            )


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzip IDX file into a uint8 array of the shape its header declares."""
    with gzip.open(path, "rb") as stream:
        content = stream.read()
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] != IDX_UBYTE:
        raise UserError(f"{path} is not an unsigned-byte IDX file: run `dvc repro -f download`")
    dimensions = content[3]
    header_size = 4 + 4 * dimensions
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    data = np.frombuffer(content, dtype=np.uint8, offset=header_size)
    if data.size != int(np.prod(shape)):
        raise UserError(
            f"{path} declares shape {shape} but holds {data.size} values: "
            "run `dvc repro -f download`"
        )
    return data.reshape(shape)


def read(raw_dir: Path) -> RawDataset:
    def load(file_name: str) -> np.ndarray:
        path = raw_dir / file_name
        if not path.is_file():
            raise UserError(f"{path} is missing: run `dvc repro download` first")
        return read_idx(path)

    train_images = load("train-images-idx3-ubyte.gz")[
        ..., np.newaxis
    ]  # (N, 28, 28) -> (N, 28, 28, 1)
    test_images = load("t10k-images-idx3-ubyte.gz")[..., np.newaxis]
    return RawDataset(
        images=train_images,
        labels=load("train-labels-idx1-ubyte.gz"),
        class_names=CLASS_NAMES,
        test_images=test_images,
        test_labels=load("t10k-labels-idx1-ubyte.gz"),
    )
