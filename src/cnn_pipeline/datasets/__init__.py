"""Datasets: fetching each one's raw files (download stage) and reading them back as arrays.

A module here that declares `DATASET` is a dataset named after the module (discovery.py):
digits, mnist, fashion_mnist, cifar10, image_folder, and any you add (docs/extending.md).
The others are helpers: idx.py reads IDX files, mirrors.py fetches published files from
mirrors, archive.py extracts tar members. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnn_pipeline import config, discovery
from cnn_pipeline.config import DataConfig
from cnn_pipeline.errors import UserError

if TYPE_CHECKING:
    from cnn_pipeline.datasets.mirrors import RetryPolicy

# data keys that only some datasets read (image_folder's); the others must leave them null.
OPTIONAL_KEYS = ("path", "test_path", "image_size", "color_mode")


@dataclass(frozen=True)
class RawDataset:
    """Images as uint8 (N, height, width, channels) with values 0-255, labels as class indices."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    test_images: np.ndarray | None = None  # the dataset's own test set, where it has one
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class Dataset:
    """What a module in datasets/ declares as `DATASET`."""

    # Writes the raw files into raw_dir (which does not exist yet): the download stage.
    fetch: Callable[[DataConfig, Path, RetryPolicy | None], None]
    # Reads raw_dir back as arrays: the preprocess stage.
    read: Callable[[DataConfig, Path], RawDataset]
    # True: it ships its own test set (data.test_fraction must be null); False: one is split off.
    has_own_test_set: bool
    # Which of OPTIONAL_KEYS it reads; the others must be null.
    reads_keys: tuple[str, ...] = ()
    # Its own rules on the data section, raising UserError; None: none.
    check: Callable[[DataConfig], None] | None = None


@functools.cache
def all_datasets() -> dict[str, Dataset]:
    """Every dataset, by name (its module's name), sorted."""
    return discovery.declared(sys.modules[__name__], "DATASET")


def data_config(params: dict[str, Any]) -> DataConfig:
    """The data section, checked by its keys' types and by the rules of the dataset it names."""
    data = config.data_config(params)
    known = all_datasets()
    if data.name not in known:
        raise discovery.unknown_name(
            "data.name", data.name, list(known), sys.modules[__name__], "DATASET"
        )
    dataset = known[data.name]
    for key in OPTIONAL_KEYS:
        if key not in dataset.reads_keys and getattr(data, key) is not None:
            readers = [name for name, other in known.items() if key in other.reads_keys]
            raise UserError(
                f"params.yaml: data.{key} = {getattr(data, key)!r} is only used with data.name "
                f"= {' or '.join(map(repr, readers))}, not {data.name!r}: set it to null"
            )
    if dataset.check is not None:
        dataset.check(data)
    has_own_test_set = dataset.has_own_test_set or data.test_path is not None
    if has_own_test_set and data.test_fraction is not None:
        raise UserError(
            f"params.yaml: data.test_fraction = {data.test_fraction!r} is not allowed for "
            f"data.name = {data.name!r} with its own test set: set it to null"
        )
    if not has_own_test_set and data.test_fraction is None:
        raise UserError(
            f"params.yaml: data.test_fraction = null is not allowed for data.name = "
            f"{data.name!r}, which has no separate test set: give a fraction between 0 and 1"
        )
    return data


def fetch(config: DataConfig, raw_dir: Path, policy: RetryPolicy | None = None) -> None:
    """Write the dataset's raw files into `raw_dir` (which must not exist yet)."""
    all_datasets()[config.name].fetch(config, raw_dir, policy)


def read(config: DataConfig, raw_dir: Path) -> RawDataset:
    return all_datasets()[config.name].read(config, raw_dir)
