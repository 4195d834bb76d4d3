"""Evaluate stage: test the trained model on the test set it never saw during training.

Writes test loss, accuracy and macro F1 (metrics/evaluate.json, for `dvc metrics show`),
per-class precision/recall/F1 (metrics/per_class.csv), every test prediction (a DVC
confusion plot), a confusion-matrix PNG and a per-class F1 PNG that names the class each class
is most often mistaken for, and adds them to the MLflow run that train created.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline import paths
from cnn_pipeline.atomic import atomic_path, write_json
from cnn_pipeline.config import EvaluateConfig
from cnn_pipeline.figures.confusion import (
    describe_confusion,
    most_confused_with,
    plot_confusion_matrix,
    plot_per_class_f1,
)
from cnn_pipeline.prepared import DatasetInfo, load_info, load_split
from cnn_pipeline.tracking.registry import describe_versions
from cnn_pipeline.tracking.runs import log_to_run, read_run_id
from cnn_pipeline.tracking.store import TrackingContext
from cnn_pipeline.trained_model import load_keras_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]  # what metrics/evaluate.json holds
    per_class: dict[str, dict[str, float]]  # class name -> precision, recall, f1-score
    confusion: np.ndarray  # (true class, predicted class) counts
    predicted: np.ndarray  # predicted class index per test image


def evaluate_model(
    model: Any, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, batch_size: int
) -> Evaluation:
    import keras
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    one_hot = keras.utils.to_categorical(labels, info.num_classes)
    loss_function = keras.losses.get(model.loss)  # the loss train compiled with, by name
    loss = float(np.mean(keras.ops.convert_to_numpy(loss_function(one_hot, probabilities))))
    class_indices = list(range(info.num_classes))
    report = classification_report(
        labels,
        predicted,
        labels=class_indices,
        target_names=list(info.class_names),
        output_dict=True,
        zero_division=0,
    )
    per_class = {
        name: {
            metric: round(report[name][metric], 4) for metric in ("precision", "recall", "f1-score")
        }
        for name in info.class_names
    }
    metrics = {
        "test_loss": round(loss, 5),
        "test_accuracy": round(float(accuracy_score(labels, predicted)), 5),
        "test_macro_f1": round(report["macro avg"]["f1-score"], 5),
        "test_images": len(labels),
    }
    confusion = confusion_matrix(labels, predicted, labels=class_indices)
    return Evaluation(metrics, per_class, confusion, predicted)


def _write_predictions(
    labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...], path: Path
) -> None:
    with atomic_path(path) as staged, staged.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["actual", "predicted"])
        writer.writerows(
            (class_names[a], class_names[p]) for a, p in zip(labels, predicted, strict=True)
        )


PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1")


def _write_per_class(per_class: dict[str, dict[str, float]], path: Path) -> None:
    """One row per class, so that `column -t -s, metrics/per_class.csv` reads as a table and
    DVC draws a bar plot of it."""
    with atomic_path(path) as staged, staged.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(PER_CLASS_COLUMNS)
        writer.writerows(
            (name, scores["precision"], scores["recall"], scores["f1-score"])
            for name, scores in per_class.items()
        )


# Per-class scores go to MLflow as per_class/<class>/<score>: the chart view gives each
# prefix before the first "/" its own section, so they stay apart from loss and accuracy.
PER_CLASS_SECTION = "per_class"
SCORE_NAMES = {"precision": "precision", "recall": "recall", "f1-score": "f1"}
# MLflow 3.17 accepts letters, digits, "_", "-", ".", " ", ":" and "/" in a metric name, no
# "." or ".." path segment, 250 characters at most. A class name keeps letters and digits
# (any script), "_", "-" and "."; every run of other characters becomes one "_" (spaces and
# ":" too, although MLflow takes them here: MLflow on Windows refuses ":", and a name
# without spaces is one word in a shell or a search filter).
_NOT_KEPT = re.compile(r"[^\w.\-]+")
_MAX_CLASS_CHARACTERS = 200  # leaves room for the section and the score name


def metric_safe_class_names(class_names: tuple[str, ...]) -> dict[str, str]:
    """Each class name as it appears in MLflow metric names, unique and accepted by MLflow.

    "salt & pepper" -> "salt_pepper", "T-shirt/top" -> "T-shirt_top", "café" -> "café";
    a class whose name would repeat an earlier class's gets "_<class index>" appended.
    """
    safe: dict[str, str] = {}
    for index, name in enumerate(class_names):
        # NFC: "é" as one letter, not "e" plus a combining accent (which MLflow refuses).
        candidate = _NOT_KEPT.sub("_", unicodedata.normalize("NFC", name))
        candidate = candidate[:_MAX_CLASS_CHARACTERS]
        if not candidate.strip("."):  # "", "." and ".." would be read as paths
            candidate = candidate.replace(".", "_") or "_"
        while candidate in safe.values():
            candidate = f"{candidate}_{index}"
        safe[name] = candidate
    return safe


def per_class_metric_values(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"per_class/<safe class>/<precision|recall|f1>": value} for MLflow."""
    safe = metric_safe_class_names(tuple(per_class))
    renamed = {name: mlflow_name for name, mlflow_name in safe.items() if name != mlflow_name}
    if renamed:
        logger.info(
            "class names in MLflow metric names: %s",
            ", ".join(f"{name!r} as {mlflow_name!r}" for name, mlflow_name in renamed.items()),
        )
    return {
        f"{PER_CLASS_SECTION}/{safe[name]}/{SCORE_NAMES[score]}": value
        for name, scores in per_class.items()
        for score, value in scores.items()
    }


def run(config: EvaluateConfig, context: TrackingContext, workdir: Path) -> Evaluation:
    """Evaluate workdir/models/model.keras on the prepared test split; write and log results."""
    run_id = read_run_id(workdir / paths.RUN_FILE)
    info = load_info(workdir / paths.PREPARED_DIR)
    test = load_split(workdir / paths.PREPARED_DIR, "test")
    model = load_keras_file(workdir / paths.MODEL_FILE)
    evaluation = evaluate_model(model, test.images, test.labels, info, config.batch_size)

    metrics = evaluation.metrics
    write_json(metrics, workdir / paths.TEST_METRICS_FILE)
    _write_per_class(evaluation.per_class, workdir / paths.PER_CLASS_FILE)
    _write_predictions(
        test.labels, evaluation.predicted, info.class_names, workdir / paths.PREDICTIONS_FILE
    )
    plot_confusion_matrix(
        evaluation.confusion,
        info.class_names,
        config.confusion_normalize,
        f"{model.name} on {info.name}: test accuracy {metrics['test_accuracy']:.4f}",
        workdir / paths.CONFUSION_PNG,
    )
    plot_per_class_f1(
        [scores["f1-score"] for scores in evaluation.per_class.values()],
        evaluation.confusion,
        info.class_names,
        workdir / paths.PER_CLASS_PNG,
    )
    per_class_metrics = per_class_metric_values(evaluation.per_class)
    logged = log_to_run(
        run_id,
        context,
        {**metrics, **per_class_metrics},
        [
            workdir / path
            for path in (
                paths.TEST_METRICS_FILE,
                paths.PER_CLASS_FILE,
                paths.CONFUSION_PNG,
                paths.PER_CLASS_PNG,
            )
        ],
        artifact_path="evaluation",
    )
    if logged:
        describe_versions(
            run_id,
            context,
            {key: metrics[key] for key in ("test_accuracy", "test_loss", "test_macro_f1")},
            info.name,
        )
    logger.info(
        "test accuracy %.4f, loss %.4f on %d %s test images",
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["test_images"],
        info.name,
    )
    weakest = min(evaluation.per_class, key=lambda name: evaluation.per_class[name]["f1-score"])
    index = info.class_names.index(weakest)
    logger.info(
        "weakest class %s (F1 %.4f): %s",
        weakest,
        evaluation.per_class[weakest]["f1-score"],
        describe_confusion(most_confused_with(evaluation.confusion)[index], info.class_names),
    )
    return evaluation
