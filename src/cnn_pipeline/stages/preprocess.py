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
from cnn_pipeline.errors import UserError
from cnn_pipeline.images import polarity_of
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
        assert config.test_fraction is not None  # datasets.data_config guarantees it
        rest, test_indices = stratified_split(labels, config.test_fraction, rng)
        test = Split(images[test_indices], labels[test_indices])
        images, labels = images[rest], labels[rest]
    train_indices, validation_indices = stratified_split(labels, config.validation_fraction, rng)
    splits = {
        "train": Split(images[train_indices], labels[train_indices]),
        "validation": Split(images[validation_indices], labels[validation_indices]),
        "test": test,
    }
    for name, split in splits.items():
        if len(split.labels) == 0:
            raise UserError(
                f"the {name} split of {config.name} is empty ({len(raw.labels)} images in "
                f"{len(raw.class_names)} classes): add images, or raise data.test_fraction / "
                "data.validation_fraction"
            )
    return splits


def channel_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and variance of uint8 images (N, H, W, C), in float64, one image
    batch at a time so that 50,000 colour images never become a float copy."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_squares = np.zeros(channels)
    for start in range(0, len(images), 4096):
        batch = images[start : start + 4096].reshape(-1, channels).astype(np.float64)
        total += batch.sum(axis=0)
        total_squares += np.square(batch).sum(axis=0)
    count = images.size // channels
    mean = total / count
    variance = total_squares / count - np.square(mean)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in variance)


def _counts(splits: dict[str, Split], num_classes: int) -> dict[str, Any]:
    return {
        "counts": {
            name: np.bincount(split.labels, minlength=num_classes).tolist()
            for name, split in splits.items()
        }
    }


def run(config: DataConfig, raw_dir: Path, prepared_dir: Path) -> dict[str, Split]:
    raw = datasets.read(config, raw_dir)
    splits = split_dataset(raw, config)
    height, width, channels = raw.images.shape[1:]
    mean, variance = channel_statistics(splits["train"].images)
    info = DatasetInfo(
        config.name,
        raw.class_names,
        (height, width, channels),
        mean,
        variance,
        polarity=polarity_of(splits["train"].images),  # predict inverts images that differ
    )
    with atomic_path(prepared_dir) as staged:
        staged.mkdir()
        for name, split in splits.items():
            write_split(staged, name, split)
        write_info(staged, info, _counts(splits, info.num_classes))
    logger.info(
        "%s: %s images of %dx%dx%d (%s) in %s",
        config.name,
        ", ".join(f"{len(split.labels)} {name}" for name, split in splits.items()),
        height,
        width,
        channels,
        str(info.polarity).replace("_", " "),
        prepared_dir,
    )
    return splits
