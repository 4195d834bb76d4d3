"""The prepared dataset: the contract between preprocess and the stages that train and test.

`data/prepared/` holds one uncompressed .npz per split (uint8 images NHWC, uint8 labels;
loaded without pickle) and `dataset.json` with class names, shapes, the training split's
pixel statistics and polarity, and per-split counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline.errors import UserError
from cnn_pipeline.images import POLARITIES, Polarity

SPLITS = ("train", "validation", "test")
INFO_FILE = "dataset.json"


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, height, width, channels), 0-255
    labels: np.ndarray  # uint8 class indices, (N,)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (height, width, channels)
    channel_mean: tuple[float, ...]  # of the training split's pixels, 0-255, per channel
    channel_variance: tuple[float, ...]
    # Light strokes on dark or dark on light, measured over the training split (see images.py);
    # None in a dataset.json written before it was measured.
    polarity: Polarity | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def write_split(directory: Path, split_name: str, split: Split) -> None:
    np.savez(directory / f"{split_name}.npz", images=split.images, labels=split.labels)


def load_split(prepared_dir: Path, split_name: str) -> Split:
    path = prepared_dir / f"{split_name}.npz"
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro preprocess` first")
    with np.load(path, allow_pickle=False) as arrays:
        return Split(images=arrays["images"], labels=arrays["labels"])


def write_info(directory: Path, info: DatasetInfo, stats: dict[str, Any]) -> None:
    document = {
        "name": info.name,
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
        "train_channel_mean": list(info.channel_mean),
        "train_channel_variance": list(info.channel_variance),
        "train_polarity": info.polarity,
        **stats,
    }
    (directory / INFO_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def load_info(prepared_dir: Path) -> DatasetInfo:
    path = prepared_dir / INFO_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro preprocess` first")
    document = json.loads(path.read_text(encoding="utf-8"))
    height, width, channels = document["image_shape"]
    polarity = document.get("train_polarity")
    if polarity is not None and polarity not in POLARITIES:
        raise UserError(
            f"{path}: train_polarity = {polarity!r} is invalid: expected one of "
            f"{list(POLARITIES)}; run `dvc repro -f preprocess` to rewrite it"
        )
    return DatasetInfo(
        name=document["name"],
        class_names=tuple(document["class_names"]),
        image_shape=(height, width, channels),
        channel_mean=tuple(document["train_channel_mean"]),
        channel_variance=tuple(document["train_channel_variance"]),
        polarity=polarity,
    )


def values_in_test_split(prepared_dir: Path) -> int | None:
    """How many pixel values the test split holds (images x height x width x channels), read
    from dataset.json without loading any array; None where it cannot be read."""
    try:
        document = json.loads((prepared_dir / INFO_FILE).read_text(encoding="utf-8"))
        return int(sum(document["counts"]["test"]) * np.prod(document["image_shape"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
