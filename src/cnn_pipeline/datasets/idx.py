"""Datasets published as four gzip IDX files (MNIST and Fashion-MNIST share the format)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_pipeline.datasets import Dataset, RawDataset
from cnn_pipeline.datasets.mirrors import (
    Checksum,
    RemoteFile,
    RetryPolicy,
    fetch,
    mirrors_in_effect,
)
from cnn_pipeline.errors import UserError

IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one these datasets use


def idx_file(name: str, content_sha256: str, gzip_md5: str) -> RemoteFile:
    """One published .gz IDX file, accepted by the SHA-256 of its decompressed content (so a
    mirror or a distribution package that recompressed it passes) or by the MD5 of the .gz
    file as published."""
    return RemoteFile(
        name,
        (
            Checksum("sha256", content_sha256, of_decompressed_content=True),
            Checksum("md5", gzip_md5),
        ),
    )


@dataclass(frozen=True)
class IdxDataset:
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile
    class_names: tuple[str, ...]

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


def fetch_all(
    spec: IdxDataset, mirrors: list[str], raw_dir: Path, policy: RetryPolicy | None = None
) -> None:
    raw_dir.mkdir(parents=True)
    for remote in spec.files:
        fetch(remote, mirrors, raw_dir / remote.name, policy)


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzip IDX file into a uint8 array of the shape its header declares."""
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro download` first")
    try:
        with gzip.open(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path} is unreadable ({error}): run `dvc repro -f download`") from None
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


def read(spec: IdxDataset, raw_dir: Path) -> RawDataset:
    def load(remote: RemoteFile) -> np.ndarray:
        return read_idx(raw_dir / remote.name)

    return RawDataset(
        images=load(spec.train_images)[..., np.newaxis],  # (N, 28, 28) -> (N, 28, 28, 1)
        labels=load(spec.train_labels),
        class_names=spec.class_names,
        test_images=load(spec.test_images)[..., np.newaxis],
        test_labels=load(spec.test_labels),
    )


def dataset(spec: IdxDataset) -> Dataset:
    """The `DATASET` of a module that describes one IDX dataset (mnist.py, fashion_mnist.py)."""
    return Dataset(
        fetch=lambda config, raw_dir, policy: fetch_all(
            spec, mirrors_in_effect(config.mirrors, config.mirror), raw_dir, policy
        ),
        read=lambda config, raw_dir: read(spec, raw_dir),
        has_own_test_set=True,
    )
