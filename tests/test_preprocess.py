"""Preprocess: stratified seeded splits, uint8 arrays, and no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_pipeline.images import polarity_of
from cnn_pipeline.prepared import load_info, load_split
from cnn_pipeline.stages import download, preprocess

from conftest import REPO_ROOT, data_config

DIGITS = data_config("digits")


def test_stratified_split_keeps_class_shares() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 10])
    kept, held_out = preprocess.stratified_split(labels, 0.2, np.random.default_rng(0))
    assert np.bincount(labels[held_out]).tolist() == [20, 10, 2]
    assert np.intersect1d(kept, held_out).size == 0
    assert kept.size + held_out.size == labels.size


def test_digits_splits_are_disjoint_seeded_and_uint8(tmp_path: Path) -> None:
    download.run(DIGITS, tmp_path / "raw")
    first = preprocess.run(DIGITS, tmp_path / "raw", tmp_path / "prepared")
    again = preprocess.run(DIGITS, tmp_path / "raw", tmp_path / "prepared-again")

    sizes = {name: len(split.labels) for name, split in first.items()}
    assert sizes == {"train": 1295, "validation": 143, "test": 359}
    for name, split in first.items():
        loaded = load_split(tmp_path / "prepared", name)
        assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.uint8
        np.testing.assert_array_equal(loaded.images, split.images)
        np.testing.assert_array_equal(loaded.labels, split.labels)
        np.testing.assert_array_equal(again[name].images, split.images)  # same seed, same split
    assert sum(sizes.values()) == 1797  # every image in exactly one split
    info = load_info(tmp_path / "prepared")
    assert info.image_shape == (8, 8, 1)
    assert info.class_names == tuple("0123456789")
    assert info.polarity == "light_on_dark"  # white strokes on black, as predict must know


def test_polarity_is_one_direction_only_when_nine_images_in_ten_agree() -> None:
    dark, light = np.full((1, 4, 4, 1), 10, np.uint8), np.full((1, 4, 4, 1), 245, np.uint8)
    assert polarity_of(np.concatenate([dark] * 9 + [light])) == "light_on_dark"
    assert polarity_of(np.concatenate([light] * 9 + [dark])) == "dark_on_light"
    assert polarity_of(np.concatenate([light] * 8 + [dark] * 2)) == "mixed"


def test_a_dataset_json_from_before_polarity_reads_as_unknown(tmp_path: Path) -> None:
    download.run(DIGITS, tmp_path / "raw")
    preprocess.run(DIGITS, tmp_path / "raw", tmp_path / "prepared")
    document = json.loads((tmp_path / "prepared/dataset.json").read_text())
    assert document.pop("train_polarity") == "light_on_dark"
    (tmp_path / "prepared/dataset.json").write_text(json.dumps(document))
    assert load_info(tmp_path / "prepared").polarity is None


def test_mnist_keeps_its_own_test_set(tmp_path: Path, mnist_dir: Path) -> None:
    config = data_config("mnist")
    splits = preprocess.run(config, mnist_dir, tmp_path / "prepared")
    sizes = {name: len(split.labels) for name, split in splits.items()}
    assert sizes["test"] == 10000
    assert sizes["train"] + sizes["validation"] == 60000
    # 10% of each class, rounded per class: 6,000 give or take a few.
    assert abs(sizes["validation"] - 6000) <= 5


def test_data_stages_do_not_import_tensorflow_or_sklearn(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    probe = (
        "import sys; sys.argv = ['cnn-pipeline', '{stage}'];"
        "from cnn_pipeline.cli import main; code = main();"
        "heavy = ('tensorflow', 'keras', 'sklearn', 'mlflow');"
        "print(sorted(m for m in heavy if m in sys.modules)); sys.exit(code)"
    )
    for stage in ("download", "preprocess"):
        result = subprocess.run(
            [sys.executable, "-c", probe.format(stage=stage)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == "[]", (stage, result.stdout, result.stderr)


def test_an_empty_split_stops_with_advice(tmp_path: Path) -> None:
    from PIL import Image

    from cnn_pipeline.errors import UserError

    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), index * 60).save(tmp_path / "images" / name / f"{index}.png")
    config = data_config("image_folder", path=str(tmp_path / "images"), image_size=8)
    download.run(config, tmp_path / "raw")
    with pytest.raises(UserError, match=r"the validation split of image_folder is empty .* raise"):
        preprocess.run(config, tmp_path / "raw", tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
