"""Datasets: fetching each one's raw files (download stage) and reading them back as arrays.

Each dataset module offers `fetch(config, raw_dir)` and `read(raw_dir) -> RawDataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_pipeline.config import DataConfig


@dataclass(frozen=True)
class RawDataset:
    """Images as uint8 (N, height, width, channels) with values 0-255, labels as class indices."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    test_images: np.ndarray | None = None  # the dataset's own test set, where it has one
    test_labels: np.ndarray | None = None


def fetch(config: DataConfig, raw_dir: Path) -> None:
    """Write the dataset's raw files into `raw_dir` (which must not exist yet)."""
    from cnn_pipeline.datasets import digits, mnist

    if config.name == "digits":
        digits.fetch(raw_dir)
    else:
        mnist.fetch(config.mirrors, raw_dir)


def read(name: str, raw_dir: Path) -> RawDataset:
    from cnn_pipeline.datasets import digits, mnist

    return digits.read(raw_dir) if name == "digits" else mnist.read(raw_dir)
