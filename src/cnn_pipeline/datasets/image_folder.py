"""A folder of your own images, one sub-folder per class (`cats/`, `dogs/`, ...).

The download stage copies the image files into data/raw/ (so DVC versions exactly what was
trained on); preprocess decodes them with `images.read_image` (the reader predict uses too:
grayscale or RGB, resized to image_size x image_size), straight into one preallocated uint8
array. Unreadable files, and images over Pillow's decompression-bomb limit, are skipped and
counted.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from cnn_pipeline.config import MISSING_VALUE, DataConfig
from cnn_pipeline.datasets import OPTIONAL_KEYS, Dataset, RawDataset
from cnn_pipeline.errors import UserError
from cnn_pipeline.images import UnreadableImage, read_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
TRAIN_DIR, TEST_DIR = "train", "test"


def _class_files(folder: Path, key: str) -> dict[str, list[Path]]:
    if not folder.is_dir():
        raise UserError(
            f"params.yaml: {key} = {str(folder)!r} is not a folder: give a folder "
            "with one sub-folder of images per class"
        )
    classes = {
        child.name: sorted(
            p for p in child.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for child in sorted(folder.iterdir())
        if child.is_dir() and not child.name.startswith(".")
    }
    if not classes:
        raise UserError(
            f"{folder} has no class sub-folders: put each class's images in a "
            "sub-folder named after the class"
        )
    if len(classes) < 2:
        raise UserError(
            f"{folder} has a single class ({next(iter(classes))}): a classifier "
            "needs at least two class sub-folders"
        )
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise UserError(
            f"{folder}: class folder(s) {empty} hold no PNG, JPEG, BMP or GIF "
            "image: add images or remove the folder"
        )
    return classes


def fetch(path: Path, test_path: Path | None, raw_dir: Path) -> None:
    sources = [(TRAIN_DIR, path, "data.path")]
    if test_path is not None:
        sources.append((TEST_DIR, test_path, "data.test_path"))
    for split, folder, key in sources:
        for class_name, files in _class_files(folder, key).items():
            target = raw_dir / split / class_name
            target.mkdir(parents=True)
            for index, file in enumerate(files):
                # Numbered names: files from nested folders cannot collide.
                shutil.copyfile(file, target / f"{index:06d}{file.suffix.lower()}")


def _decode(
    files: list[tuple[Path, int]], image_size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.uint8)
    kept = 0
    unreadable: list[str] = []
    for path, label in files:
        try:
            images[kept] = read_image(path, image_size, image_size, channels)
        except UnreadableImage as error:
            unreadable.append(f"{path.parent.name}/{path.name} ({error})")
            continue
        labels[kept] = label
        kept += 1
    if unreadable:
        logger.warning(
            "skipped %d unreadable image file(s), e.g. %s",
            len(unreadable),
            "; ".join(unreadable[:3]),
        )
    return images[:kept], labels[:kept]


def read(raw_dir: Path, image_size: int, color_mode: str) -> RawDataset:
    channels = 1 if color_mode == "grayscale" else 3
    train_classes = _class_files(raw_dir / TRAIN_DIR, "data.path")
    class_names = tuple(train_classes)
    if len(class_names) > 256:
        raise UserError(f"{raw_dir}: {len(class_names)} classes; at most 256 are supported")

    def listed(classes: dict[str, list[Path]]) -> list[tuple[Path, int]]:
        return [
            (file, class_names.index(name)) for name, files in classes.items() for file in files
        ]

    images, labels = _decode(listed(train_classes), image_size, channels)
    missing = set(range(len(class_names))) - set(labels.tolist())
    if missing:
        raise UserError(
            f"class(es) {sorted(class_names[i] for i in missing)} have no readable "
            "image: add readable PNG/JPEG/BMP/GIF files"
        )
    test_images = test_labels = None
    if (raw_dir / TEST_DIR).is_dir():
        test_classes = _class_files(raw_dir / TEST_DIR, "data.test_path")
        unknown = set(test_classes) - set(class_names)
        if unknown:
            raise UserError(
                f"test folder classes {sorted(unknown)} are not among the training "
                f"classes {list(class_names)}"
            )
        test_images, test_labels = _decode(listed(test_classes), image_size, channels)
    return RawDataset(images, labels, class_names, test_images, test_labels)


def check(config: DataConfig) -> None:
    """data.path, image_size and color_mode are required (test_path is optional)."""
    if config.path == MISSING_VALUE:
        raise UserError(
            "params.yaml: data.path is required for data.name = 'image_folder': set it to your "
            "folder, e.g. `-S data.path=/data/pets` or `cnn-pipeline params data=image_folder "
            "data.path=/data/pets`"
        )
    for key in ("path", "image_size", "color_mode"):
        if getattr(config, key) is None:
            raise UserError(
                f"params.yaml: data.{key} = null is not allowed for data.name = "
                "'image_folder': set it (see conf/data/image_folder.yaml)"
            )


def _fetch(config: DataConfig, raw_dir: Path, policy: object) -> None:
    assert config.path is not None  # check() guarantees it
    fetch(Path(config.path), Path(config.test_path) if config.test_path else None, raw_dir)


def _read(config: DataConfig, raw_dir: Path) -> RawDataset:
    assert config.image_size is not None and config.color_mode is not None  # check()
    return read(raw_dir, config.image_size, config.color_mode)


DATASET = Dataset(_fetch, _read, has_own_test_set=False, reads_keys=OPTIONAL_KEYS, check=check)
