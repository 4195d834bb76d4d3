"""Preprocess stage: split the raw dataset into train, validation and test arrays.

The test set is the dataset's own where it has one (MNIST), else a seeded stratified share
of the images (digits). The validation set is a seeded stratified share of what remains.
This stage does not import TensorFlow or scikit-learn (each costs seconds to import).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline import datasets
from cnn_pipeline.atomic import atomic_path
from cnn_pipeline.config import DataConfig
from cnn_pipeline.prepared import DatasetInfo, Split, write_info, write_split

logger = logging.getLogger(__name__)


def stratified_split(
    labels: np.ndarray, held_out_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, held_out) index arrays; each class gives the same share to held_out.

    Written with NumPy rather than sklearn's train_test_split so this stage stays import-light.
    """
    kept: list[np.ndarray] = []
    held_out: list[np.ndarray] = []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        count = round(held_out_fraction * len(indices))
        held_out.append(indices[:count])
        kept.append(indices[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held_out))


def split_dataset(raw: datasets.RawDataset, config: DataConfig) -> dict[str, Split]:
    rng = np.random.default_rng(config.split_seed)
    images, labels = raw.images, raw.labels
    if raw.test_images is not None and raw.test_labels is not None:
        test = Split(raw.test_images, raw.test_labels)
    else:
        assert config.test_fraction is not None  # DataConfig.check_test_split guarantees it
        rest, test_indices = stratified_split(labels, config.test_fraction, rng)
        test = Split(images[test_indices], labels[test_indices])
        images, labels = images[rest], labels[rest]
    train_indices, validation_indices = stratified_split(labels, config.validation_fraction, rng)
    return {
        "train": Split(images[train_indices], labels[train_indices]),
        "validation": Split(images[validation_indices], labels[validation_indices]),
        "test": test,
    }


def _stats(splits: dict[str, Split], num_classes: int) -> dict[str, Any]:
    train_pixels = splits["train"].images
    return {
        "counts": {
            name: np.bincount(split.labels, minlength=num_classes).tolist()
            for name, split in splits.items()
        },
        "train_pixel_mean": round(float(train_pixels.mean()), 4),
        "train_pixel_std": round(float(train_pixels.std()), 4),
    }


def run(config: DataConfig, raw_dir: Path, prepared_dir: Path) -> dict[str, Split]:
    raw = datasets.read(config.name, raw_dir)
    splits = split_dataset(raw, config)
    height, width, channels = raw.images.shape[1:]
    info = DatasetInfo(config.name, raw.class_names, (height, width, channels))
    with atomic_path(prepared_dir) as staged:
        staged.mkdir()
        for name, split in splits.items():
            write_split(staged, name, split)
        write_info(staged, info, _stats(splits, info.num_classes))
    logger.info(
        "%s: %s images of %dx%dx%d in %s",
        config.name,
        ", ".join(f"{len(split.labels)} {name}" for name, split in splits.items()),
        height,
        width,
        channels,
        prepared_dir,
    )
    return splits
