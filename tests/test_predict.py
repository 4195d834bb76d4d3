"""`cnn-pipeline predict`: image conversion, per-image errors, and Keras safe mode."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from cnn_pipeline.models import build_model
from cnn_pipeline.predict import load_image

from conftest import run_command
from test_models import SIMPLE_CNN_BN


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    keras.utils.set_random_seed(0)
    model = build_model(SIMPLE_CNN_BN, (8, 8, 1), 3)
    model.save(directory / "model.keras")
    info = {"dataset": "toy", "class_names": ["cat", "dog", "fox"], "image_shape": [8, 8, 1]}
    (directory / "model.json").write_text(json.dumps(info))
    return directory


def test_colour_photo_becomes_the_models_grayscale_size(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    array = load_image(photo, (8, 8, 1), invert="no")
    assert array.shape == (8, 8, 1) and array.dtype == np.uint8


def test_light_background_is_inverted_in_auto_mode(tmp_path: Path) -> None:
    paper = tmp_path / "paper.png"
    Image.new("L", (16, 16), 240).save(paper)  # ink on white paper: mostly light
    assert load_image(paper, (8, 8, 1), invert="auto").mean() == pytest.approx(15)
    assert load_image(paper, (8, 8, 1), invert="no").mean() == pytest.approx(240)


def test_rgb_models_get_three_channels(tmp_path: Path) -> None:
    gif = tmp_path / "frames.gif"
    frames = [Image.new("P", (10, 10), colour) for colour in (1, 2)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert load_image(gif, (32, 32, 3), invert="auto").shape == (32, 32, 3)


def test_predict_prints_json_and_reports_each_unreadable_image(
    tmp_path: Path, model_dir: Path
) -> None:
    good = tmp_path / "good.png"
    Image.new("L", (30, 30), 0).save(good)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG but not really")
    missing = tmp_path / "missing.png"

    result = run_command(
        [
            "cnn-pipeline",
            "predict",
            "--model",
            str(model_dir / "model.keras"),
            "--json",
            "--top",
            "2",
            str(good),
            str(corrupt),
            str(missing),
        ],
        tmp_path,
        check=False,
    )

    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["image"] == str(good)
    assert [entry["class"] for entry in lines[0]["top"]] in (
        [a, b] for a in ("cat", "dog", "fox") for b in ("cat", "dog", "fox") if a != b
    )
    assert sum(entry["probability"] for entry in lines[0]["top"]) <= 1.0 + 1e-6
    assert {line["image"] for line in lines[1:]} == {str(corrupt), str(missing)}
    assert f"cannot read {corrupt}" in result.stderr
    assert f"cannot read {missing}: no such file" in result.stderr


def test_a_model_with_python_code_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    (tmp_path / "model.json").write_text(
        json.dumps({"class_names": ["a"], "image_shape": [8, 8, 1]})
    )
    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)

    result = run_command(
        ["cnn-pipeline", "predict", "--model", str(tmp_path / "model.keras"), str(image)],
        tmp_path,
        check=False,
    )

    assert result.returncode == 2
    assert "was refused: it contains Python code (a Lambda layer)" in result.stderr
    assert "Traceback" not in result.stderr
