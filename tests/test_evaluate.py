"""The evaluate stage on your own image folder whose class names MLflow would refuse.

One module-scoped workdir runs the real stages (`cnn-pipeline download`, `preprocess`,
`train`, `evaluate`, in this process so that evaluate's figure can be looked at before it is
saved) against a real SQLite MLflow store; the tests check what evaluate wrote and logged against
metrics/test_predictions.csv, the one record of every test prediction.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnn_pipeline import cli, paths
from cnn_pipeline.figures import confusion
from cnn_pipeline.stages import evaluate

from conftest import REPO_ROOT

# Folder names as a user might have them: a space, "&", a slash look-alike (a folder name
# cannot hold "/" itself), an accent written as "e" plus a combining accent (macOS writes file
# names so), another script, and an emoji. MLflow 3.17 refuses "&", the look-alike slash, the
# combining accent and the emoji in metric names.
CLASS_NAMES = [
    "ice cream",
    "salt & pepper",
    "T-shirt\u2215top",
    "cre\u0300me bru\u0302le\u0301e",
    "ラーメン",
    "\U0001f431 cat",
]
EXPECTED_METRIC_NAMES = {
    "ice cream": "ice_cream",
    "salt & pepper": "salt_pepper",
    "T-shirt\u2215top": "T-shirt_top",
    "cre\u0300me bru\u0302le\u0301e": unicodedata.normalize("NFC", "crème_brûlée"),
    "ラーメン": "ラーメン",
    "\U0001f431 cat": "_cat",
}
SCORES = {"precision": "precision", "recall": "recall", "f1-score": "f1"}


def write_image_folder(root: Path) -> Path:
    """Twelve 8x8 light-on-dark images per class: a bright square at the class's place."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASS_NAMES):
        folder = root / name
        folder.mkdir(parents=True)
        row, column = divmod(index, 3)
        for number in range(12):
            pixels = rng.integers(0, 40, (8, 8), dtype=np.uint8)
            pixels[row * 4 : row * 4 + 3, column * 3 : column * 3 + 2] = 230
            Image.fromarray(pixels).save(folder / f"{number}.png")
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The workdir after download, preprocess, train and evaluate, with the confusion-matrix
    figure as evaluate drew it."""
    workdir = tmp_path_factory.mktemp("evaluated")
    images = write_image_folder(tmp_path_factory.mktemp("images"))
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    overrides = [
        "data=image_folder",
        f"data.path={images}",
        "data.image_size=8",
        "data.color_mode=grayscale",
        "train.epochs=2",
    ]
    figures: dict[Path, Any] = {}
    real_save_figure = confusion.save_figure

    def save_and_keep(figure: Any, path: Path) -> None:
        real_save_figure(figure, path)
        figures[path] = figure

    # In this process: TensorFlow is imported once for train and evaluate, not per stage.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setenv("MLFLOW_TRACKING_URI", store)
        patch.setattr(confusion, "save_figure", save_and_keep)
        assert (
            cli.main(
                [
                    "params",
                    "--config-dir",
                    str(REPO_ROOT / "conf"),
                    "--output",
                    "params.yaml",
                    *overrides,
                ]
            )
            == 0
        )
        for stage in ("download", "preprocess", "train", "evaluate"):
            assert cli.main([stage]) == 0, f"cnn-pipeline {stage} failed"
    yield {
        "workdir": workdir,
        "store": store,
        "confusion_figure": figures[workdir / paths.CONFUSION_PNG],
    }


def read_predictions(workdir: Path) -> tuple[list[str], list[str]]:
    with (workdir / paths.PREDICTIONS_FILE).open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return [row["actual"] for row in rows], [row["predicted"] for row in rows]


def class_names(workdir: Path) -> list[str]:
    names: list[str] = json.loads((workdir / paths.PREPARED_DIR / "dataset.json").read_text())[
        "class_names"
    ]
    return names


def test_class_names_travel_unchanged_into_the_files(evaluated: dict[str, Any]) -> None:
    workdir = evaluated["workdir"]
    assert class_names(workdir) == sorted(CLASS_NAMES)
    model_info = json.loads((workdir / paths.MODEL_INFO_FILE).read_text())
    assert model_info["class_names"] == sorted(CLASS_NAMES)
    assert model_info["polarity"] == "light_on_dark"  # measured by preprocess, kept by train
    actual, predicted = read_predictions(workdir)
    assert set(actual) <= set(CLASS_NAMES) and set(predicted) <= set(CLASS_NAMES)


def test_per_class_scores_are_logged_under_sanitised_names_in_their_own_section(
    evaluated: dict[str, Any],
) -> None:
    import mlflow
    from sklearn.metrics import classification_report

    workdir = evaluated["workdir"]
    run_id = json.loads((workdir / paths.RUN_FILE).read_text())["run_id"]
    logged = mlflow.MlflowClient(tracking_uri=evaluated["store"]).get_run(run_id).data.metrics

    actual, predicted = read_predictions(workdir)
    report = classification_report(
        actual, predicted, labels=CLASS_NAMES, output_dict=True, zero_division=0
    )
    expected = {
        f"per_class/{EXPECTED_METRIC_NAMES[name]}/{short}": round(report[name][score], 4)
        for name in CLASS_NAMES
        for score, short in SCORES.items()
    }
    per_class = {key: value for key, value in logged.items() if key.startswith("per_class/")}
    assert per_class == pytest.approx(expected)
    # Nothing else went into that section, and no per-class score is left outside it.
    assert not [key for key in logged if "class" in key and not key.startswith("per_class/")]
    assert (
        logged["test_accuracy"]
        == json.loads((workdir / paths.TEST_METRICS_FILE).read_text())["test_accuracy"]
    )


def test_evaluate_json_matches_the_predictions_file(evaluated: dict[str, Any]) -> None:
    from sklearn.metrics import f1_score

    workdir = evaluated["workdir"]
    metrics = json.loads((workdir / paths.TEST_METRICS_FILE).read_text())
    actual, predicted = read_predictions(workdir)
    right = sum(a == p for a, p in zip(actual, predicted, strict=True))
    assert metrics["test_images"] == len(actual) == 12  # 20% of 6 classes x 12 images
    assert metrics["test_accuracy"] == round(right / len(actual), 5)
    macro_f1 = f1_score(actual, predicted, labels=CLASS_NAMES, average="macro", zero_division=0)
    assert metrics["test_macro_f1"] == pytest.approx(round(macro_f1, 5))


def test_confusion_matrix_figure_shows_the_predictions_file(evaluated: dict[str, Any]) -> None:
    workdir = evaluated["workdir"]
    names = class_names(workdir)
    actual, predicted = read_predictions(workdir)
    expected = np.zeros((len(names), len(names)), dtype=int)
    for a, p in zip(actual, predicted, strict=True):
        expected[names.index(a), names.index(p)] += 1

    axes = evaluated["confusion_figure"].axes[0]
    np.testing.assert_array_equal(axes.images[0].get_array(), expected)  # the coloured cells
    numbers = [int(text.get_text()) for text in axes.texts]  # the counts written on them
    assert numbers == expected.ravel().tolist()
    assert [label.get_text() for label in axes.get_xticklabels()] == names
    assert [label.get_text() for label in axes.get_yticklabels()] == names

    # The PNG on disk is that figure, not a blank page: the cells' blues are in it.
    png = Image.open(io.BytesIO((workdir / paths.CONFUSION_PNG).read_bytes())).convert("RGB")
    pixels = np.asarray(png).reshape(-1, 3).astype(int)
    blue = (pixels[:, 2] > pixels[:, 0] + 60).sum()  # Blues colormap: blue well above red
    assert blue > 0.05 * len(pixels)
    assert len(np.unique(pixels, axis=0)) > 20


def test_metric_names_stay_unique_short_and_accepted_by_mlflow(
    evaluated: dict[str, Any],
) -> None:
    import mlflow
    from mlflow.entities import Metric

    names = ("a b", "a_b", "a&b", ".", "..", "", "x" * 300, "0", "e:\u0301")
    safe = evaluate.metric_safe_class_names(names)
    assert safe == {
        "a b": "a_b",
        "a_b": "a_b_1",  # the second name that sanitises alike gets its class index
        "a&b": "a_b_2",
        ".": "_",  # "." and ".." would be read as paths
        "..": "__",
        "": "__5",
        "x" * 300: "x" * 200,
        "0": "0",
        "e:\u0301": "e_",
    }
    # Every one of them goes into a real SQLite store (MLflow checks each name).
    client = mlflow.MlflowClient(tracking_uri=evaluated["store"])
    run = client.create_run(client.create_experiment("metric-names")).info.run_id
    scores = {name: {"precision": 0.5, "recall": 0.25, "f1-score": 1 / 3} for name in names}
    values = evaluate.per_class_metric_values(scores)
    client.log_batch(run, metrics=[Metric(key, value, 0, 0) for key, value in values.items()])
    assert client.get_run(run).data.metrics == pytest.approx(values)
    assert len(values) == 3 * len(names)
