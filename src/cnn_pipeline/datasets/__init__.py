"""Datasets: fetching each one's raw files (download stage) and reading them back as arrays.

One module per dataset (or format): digits, mnist and fashion_mnist (IDX files, idx.py),
cifar10, image_folder; mirrors.py fetches published files from mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnn_pipeline.config import DataConfig

if TYPE_CHECKING:
    from cnn_pipeline.datasets.idx import IdxDataset
    from cnn_pipeline.datasets.mirrors import RetryPolicy


@dataclass(frozen=True)
class RawDataset:
    """Images as uint8 (N, height, width, channels) with values 0-255, labels as class indices."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    test_images: np.ndarray | None = None  # the dataset's own test set, where it has one
    test_labels: np.ndarray | None = None


def fetch(config: DataConfig, raw_dir: Path, policy: RetryPolicy | None = None) -> None:
    """Write the dataset's raw files into `raw_dir` (which must not exist yet)."""
    from cnn_pipeline.datasets import cifar10, digits, idx, image_folder
    from cnn_pipeline.datasets.mirrors import mirrors_in_effect

    mirrors = mirrors_in_effect(config.mirrors, config.mirror)
    if config.name == "digits":
        digits.fetch(raw_dir)
    elif config.name == "image_folder":
        assert config.path is not None  # DataConfig.check_consistency guarantees it
        test_path = Path(config.test_path) if config.test_path else None
        image_folder.fetch(Path(config.path), test_path, raw_dir)
    elif config.name == "cifar10":
        cifar10.fetch_all(mirrors, raw_dir, policy)
    else:
        idx.fetch_all(_idx_spec(config.name), mirrors, raw_dir, policy)


def read(config: DataConfig, raw_dir: Path) -> RawDataset:
    from cnn_pipeline.datasets import cifar10, digits, idx, image_folder

    if config.name == "digits":
        return digits.read(raw_dir)
    if config.name == "image_folder":
        assert config.image_size is not None and config.color_mode is not None
        return image_folder.read(raw_dir, config.image_size, config.color_mode)
    if config.name == "cifar10":
        return cifar10.read(raw_dir)
    return idx.read(_idx_spec(config.name), raw_dir)


def _idx_spec(name: str) -> IdxDataset:
    from cnn_pipeline.datasets.fashion_mnist import FASHION_MNIST
    from cnn_pipeline.datasets.mnist import MNIST

    return {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}[name]
