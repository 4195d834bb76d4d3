"""scikit-learn's bundled 8x8 handwritten digits, read without importing scikit-learn.

scikit-learn ships them as `sklearn/datasets/data/digits.csv.gz`: 1,797 rows of 64 pixel
values (0-16) followed by the label. Importing scikit-learn costs about 5 s on a 2-core
machine, more than the whole download stage is allowed, so this module locates the file
through the package's import spec (which does not run the package) and parses it with NumPy.
tests/test_datasets.py checks the result against `sklearn.datasets.load_digits()`.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np

from cnn_pipeline.datasets import Dataset, RawDataset
from cnn_pipeline.errors import UserError

FILE_NAME = "digits.csv.gz"
IMAGE_SIDE = 8
MAX_PIXEL_VALUE = 16  # the dataset counts ink in 4x4 blocks of a 32x32 bitmap: 0-16
CLASS_NAMES = tuple(str(digit) for digit in range(10))


def bundled_file() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise UserError("scikit-learn is not installed: run `make setup` to create the environment")
    path = Path(spec.origin).parent / "datasets" / "data" / FILE_NAME
    if not path.is_file():
        raise UserError(f"scikit-learn's bundled digits are missing at {path}: reinstall it")
    return path


def fetch(raw_dir: Path) -> None:
    raw_dir.mkdir(parents=True)
    shutil.copyfile(bundled_file(), raw_dir / FILE_NAME)


def read(raw_dir: Path) -> RawDataset:
    path = raw_dir / FILE_NAME
    try:
        with gzip.open(path, "rt") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{path} is unreadable ({error}): run `dvc repro -f download`") from None
    pixels, labels = table[:, :-1], table[:, -1]
    # Rescale 0-16 ink counts to the 0-255 range of every other dataset.
    images = np.rint(pixels * (255 / MAX_PIXEL_VALUE)).astype(np.uint8)
    images = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)  # (N, 64) -> (N, 8, 8, 1)
    return RawDataset(images=images, labels=labels.astype(np.uint8), class_names=CLASS_NAMES)


DATASET = Dataset(
    fetch=lambda config, raw_dir, policy: fetch(raw_dir),
    read=lambda config, raw_dir: read(raw_dir),
    has_own_test_set=False,
)
