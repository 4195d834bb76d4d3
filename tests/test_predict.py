"""`cnn-pipeline predict`: image conversion, per-image errors, and Keras safe mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from cnn_pipeline import cli
from cnn_pipeline.datasets import image_folder
from cnn_pipeline.images import Polarity, polarity_of
from cnn_pipeline.predict import load_image
from cnn_pipeline.prepared import Split
from cnn_pipeline.stages import download, preprocess

from conftest import REPO_ROOT, data_config, run_command, write_huge_png


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Split]:
    workdir = tmp_path_factory.mktemp("digits")
    download.run(data_config("digits"), workdir / "raw")
    return preprocess.run(data_config("digits"), workdir / "raw", workdir / "prepared")


def nearest_centroid_model(train: Split) -> keras.Model:
    """A classifier with hand-set weights: the class whose mean training image is nearest.

    argmin |x - c|^2 = argmax (x . c - |c|^2 / 2): one Dense layer, its kernel the class means.
    """
    pixels = train.images.reshape(len(train.images), -1).astype(np.float32) / 255
    centroids = np.stack([pixels[train.labels == k].mean(axis=0) for k in range(10)])
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(10, activation="softmax")
    model = keras.Model(inputs, dense(flat))
    dense.set_weights([centroids.T, -np.square(centroids).sum(axis=1) / 2])
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, Split]) -> Path:
    directory = tmp_path_factory.mktemp("model")
    nearest_centroid_model(digits["train"]).save(directory / "model.keras")
    info = {
        "dataset": "digits",
        "class_names": list("0123456789"),
        "image_shape": [8, 8, 1],
        "polarity": polarity_of(digits["train"].images),  # as preprocess measures it
    }
    (directory / "model.json").write_text(json.dumps(info))
    return directory


def known_digits(digits: dict[str, Split], model_dir: Path, folder: Path) -> dict[Path, str]:
    """Two test digits of each class, as ink on paper PNGs, at 8x8 and scaled up to 32x32;
    only digits that the model, given the test arrays themselves, gets right."""
    model = keras.saving.load_model(model_dir / "model.keras")
    test = digits["test"]
    right = np.asarray(model.predict(test.images, verbose=0)).argmax(axis=1) == test.labels
    known: dict[Path, str] = {}
    for digit in range(10):
        for index in np.flatnonzero(right & (test.labels == digit))[:2]:
            paper = Image.fromarray(255 - test.images[index, :, :, 0])  # dark ink on white
            for size in (8, 32):
                path = folder / f"digit{digit}_{index}_{size}px.png"
                paper.resize((size, size), Image.Resampling.NEAREST).save(path)
                known[path] = str(digit)
    return known


def test_colour_photo_becomes_the_models_grayscale_size(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    array = load_image(photo, (8, 8, 1), invert="no", trained_on=None)
    assert array.shape == (8, 8, 1) and array.dtype == np.uint8


@pytest.mark.parametrize(
    ("trained_on", "paper_mean", "blackboard_mean"),
    [
        ("light_on_dark", 15, 20),  # digits, MNIST: ink on paper is inverted
        ("dark_on_light", 240, 235),  # trained on scans: chalk on a blackboard is inverted
        ("mixed", 240, 20),  # photos: nothing is inverted
        (None, 15, 20),  # a model.json from before polarity was recorded: the old digits rule
    ],
)
def test_auto_inverts_what_disagrees_with_the_training_images(
    tmp_path: Path, trained_on: Polarity | None, paper_mean: int, blackboard_mean: int
) -> None:
    paper, blackboard = tmp_path / "paper.png", tmp_path / "blackboard.png"
    Image.new("L", (16, 16), 240).save(paper)  # mostly light: dark on light
    Image.new("L", (16, 16), 20).save(blackboard)  # mostly dark: light on dark
    assert load_image(paper, (8, 8, 1), "auto", trained_on).mean() == pytest.approx(paper_mean)
    assert load_image(blackboard, (8, 8, 1), "auto", trained_on).mean() == pytest.approx(
        blackboard_mean
    )
    assert load_image(paper, (8, 8, 1), "no", trained_on).mean() == pytest.approx(240)
    assert load_image(blackboard, (8, 8, 1), "yes", trained_on).mean() == pytest.approx(235)


def test_colour_images_are_never_inverted(tmp_path: Path) -> None:
    paper = tmp_path / "paper.png"
    Image.new("RGB", (16, 16), (240, 240, 240)).save(paper)
    assert load_image(paper, (8, 8, 3), "auto", "light_on_dark").mean() == pytest.approx(240)


def test_rgb_models_get_three_channels(tmp_path: Path) -> None:
    gif = tmp_path / "frames.gif"
    frames = [Image.new("P", (10, 10), colour) for colour in (1, 2)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert load_image(gif, (32, 32, 3), "auto", None).shape == (32, 32, 3)


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb"])
def test_predict_sees_an_image_exactly_as_training_did(tmp_path: Path, color_mode: str) -> None:
    # One odd-sized photo through preprocess's image folder reader and through predict.
    rng = np.random.default_rng(0)
    for class_name in ("a", "b"):
        (tmp_path / "raw/train" / class_name).mkdir(parents=True)
        pixels = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "raw/train" / class_name / "000000.jpg")
    trained = image_folder.read(tmp_path / "raw", 12, color_mode)
    channels = trained.images.shape[-1]
    for label, class_name in enumerate(("a", "b")):
        photo = tmp_path / "raw/train" / class_name / "000000.jpg"
        np.testing.assert_array_equal(
            load_image(photo, (12, 12, channels), "no", None), trained.images[label]
        )


def test_predict_names_the_class_of_known_digits(
    tmp_path: Path,
    model_dir: Path,
    digits: dict[str, Split],
    capsys: pytest.CaptureFixture[str],
) -> None:
    known = known_digits(digits, model_dir, tmp_path)
    model = str(model_dir / "model.keras")

    assert cli.main(["predict", "--model", model, "--json", "--top", "1", *map(str, known)]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Ink on paper is inverted to match the light-on-dark training digits, then classified.
    assert {Path(answer["image"]): answer["top"][0]["class"] for answer in answers} == {
        path: digit for path, digit in known.items()
    }

    # Without the inversion the same model is mostly wrong: the inversion above mattered.
    assert (
        cli.main(["predict", "--model", model, "--json", "--invert", "no", *map(str, known)]) == 0
    )
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    right = sum(answer["top"][0]["class"] == known[Path(answer["image"])] for answer in answers)
    assert right < len(known) / 2


def test_predict_prints_json_and_reports_each_unreadable_image(
    tmp_path: Path, model_dir: Path, digits: dict[str, Split]
) -> None:
    good, digit = next(iter(known_digits(digits, model_dir, tmp_path).items()))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG but not really")
    missing = tmp_path / "missing.png"
    refused, warned = tmp_path / "refused.png", tmp_path / "warned.png"
    write_huge_png(refused, 14_000, 14_000)  # past twice Pillow's limit: Pillow raises
    write_huge_png(warned, 10_000, 10_000)  # past the limit: Pillow only warns

    result = run_command(
        [
            "cnn-pipeline",
            "predict",
            "--model",
            str(model_dir / "model.keras"),
            "--json",
            "--top",
            "2",
            *map(str, (good, corrupt, missing, refused, warned)),
        ],
        tmp_path,
        check=False,
    )

    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["image"] == str(good)
    assert lines[0]["top"][0]["class"] == digit
    assert len(lines[0]["top"]) == 2
    assert sum(entry["probability"] for entry in lines[0]["top"]) <= 1.0 + 1e-6
    assert {line["image"] for line in lines[1:]} == set(
        map(str, (corrupt, missing, refused, warned))
    )
    assert f"cannot read {corrupt}" in result.stderr
    assert f"cannot read {missing}: no such file" in result.stderr
    for too_large in (refused, warned):
        assert f"cannot read {too_large}: Image size (" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_with_python_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    (tmp_path / "model.json").write_text(
        json.dumps({"class_names": ["a"], "image_shape": [8, 8, 1]})
    )
    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)

    # In this process (TensorFlow is imported already); the JSON test above runs the command.
    assert cli.main(["predict", "--model", str(tmp_path / "model.keras"), str(image)]) == 2
    stderr = capsys.readouterr().err
    assert "was refused: it contains Python code (a Lambda layer)" in stderr
    assert "Traceback" not in stderr


def repository_with_model(folder: Path, model_dir: Path) -> Path:
    """A folder laid out as the pipeline's repository (dvc.yaml, conf/) with a trained model
    in models/, and a data/ subfolder."""
    (folder / "conf").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(model_dir, folder / "models")
    return folder


def test_predict_works_from_any_folder_of_the_repository(
    tmp_path: Path, model_dir: Path, digits: dict[str, Split]
) -> None:
    repo = repository_with_model(tmp_path / "repo", model_dir)
    image, digit = next(iter(known_digits(digits, model_dir, tmp_path).items()))
    result = run_command(["cnn-pipeline", "predict", "--top", "1", str(image)], repo / "data")
    assert result.stdout.startswith(f"{image}: {digit} ")

    # The request a served model answers: the image as predict reads it, raw 0-255 pixels.
    request = run_command(["cnn-pipeline", "predict", "--request", str(image)], repo / "data")
    body = json.loads(request.stdout)
    expected = load_image(image, (8, 8, 1), "auto", polarity_of(digits["train"].images))
    assert np.array_equal(np.array(body["inputs"]), expected[np.newaxis])


def test_a_missing_model_is_named_before_tensorflow_is_imported(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    refuse = tmp_path / "refuse"
    refuse.mkdir()
    (refuse / "tensorflow.py").write_text("raise ImportError('tensorflow refused by the test')\n")
    result = run_command(
        ["cnn-pipeline", "predict", "x.png"], tmp_path / "data", check=False, PYTHONPATH=str(refuse)
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cnn-pipeline predict: error: {tmp_path.resolve() / 'models/model.keras'} is missing: "
        "run `dvc repro train` first, or pass --model"
    )


@pytest.mark.parametrize(
    ("images", "problem"),
    [
        (np.full((1, 8, 8, 1), 0.5), "the pixels look scaled to 0-1 (largest 0.5)"),
        (np.zeros((1, 28, 28, 1)), "the input has shape (1, 28, 28, 1)"),
        (np.zeros((8, 8, 1)), "the input has shape (8, 8, 1)"),
        (np.full((1, 8, 8, 1), "7"), "the pixels are text values, not numbers"),
        (np.full((1, 8, 8, 1), 300), "the pixels range from 300 to 300"),
        (np.full((1, 8, 8, 1), 12.5), "some pixels are fractions"),
        (np.full((1, 8, 8, 1), np.nan), "some pixels are NaN or infinite"),
        ([[[[0]] * 8] * 8, [[[0]] * 7] * 8], "the images are of unequal sizes"),
    ],
)
def test_the_served_model_refuses_what_it_would_misread(images: object, problem: str) -> None:
    from mlflow.exceptions import MlflowException

    from cnn_pipeline.serving import raw_pixels

    with pytest.raises(MlflowException) as refused:
        raw_pixels(images, (8, 8, 1), "light_on_dark")
    message = refused.value.message
    assert message.startswith(f"{problem}")
    assert "the model takes (N, 8, 8, 1) raw 0-255 pixels (8x8 grayscale, light on dark)" in message
    assert "cnn-pipeline predict --request IMAGE" in message
    assert len(message) < 400


def test_the_served_model_takes_whole_pixel_values_of_any_numeric_type() -> None:
    from cnn_pipeline.serving import raw_pixels

    pixels = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1) * 4
    for given in (pixels, pixels.astype(np.int64), pixels.astype(np.float64), pixels.tolist()):
        taken = raw_pixels(given, (8, 8, 1))
        assert taken.dtype == np.uint8
        assert np.array_equal(taken, pixels)


def test_promote_and_serve_use_the_repositorys_store_from_any_folder(tmp_path: Path) -> None:
    """From data/, promote and serve read the repository's params.yaml and mlflow.db; serve
    without a champion says what to do in one line instead of MLflow's traceback."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    store = f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"

    promoted = run_command(["cnn-pipeline", "promote"], tmp_path / "data", check=False)
    assert promoted.returncode == 2
    assert f"no version of 'cnn-pipeline' in {store}: run `dvc repro` first" in promoted.stderr

    served = run_command(["cnn-pipeline", "serve"], tmp_path / "data", check=False)
    assert served.returncode == 2
    assert served.stderr.strip().endswith(
        "run `cnn-pipeline promote` first, or pass --model models:/NAME/VERSION"
    )
    assert f"cannot read models:/cnn-pipeline@champion from MLflow ({store})" in served.stderr
    assert "Traceback" not in served.stderr
