"""Evaluate stage: test the trained model on the test set it never saw during training.

Writes test loss, accuracy and macro F1 (metrics/evaluate.json, for `dvc metrics show`),
per-class precision/recall/F1 (metrics/per_class.csv), every test prediction (a DVC
confusion plot) and a confusion-matrix PNG, and adds them to the MLflow run that train created.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline import paths
from cnn_pipeline.atomic import atomic_path, write_json
from cnn_pipeline.config import EvaluateConfig
from cnn_pipeline.figures import pyplot, save_figure
from cnn_pipeline.prepared import DatasetInfo, load_info, load_split
from cnn_pipeline.tracking import TrackingContext, log_to_run, read_run_id
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


def _write_confusion_png(
    confusion: np.ndarray, class_names: tuple[str, ...], normalize: bool, title: str, path: Path
) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    shown = confusion / confusion.sum(axis=1, keepdims=True).clip(min=1) if normalize else confusion
    figure, axes = pyplot().subplots(figsize=(6.4, 5.6))
    ConfusionMatrixDisplay(shown, display_labels=list(class_names)).plot(
        ax=axes, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d"
    )
    axes.set_title(title)
    save_figure(figure, path)


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
    _write_confusion_png(
        evaluation.confusion,
        info.class_names,
        config.confusion_normalize,
        f"{model.name} on {info.name}: test accuracy {metrics['test_accuracy']:.4f}",
        workdir / paths.CONFUSION_PNG,
    )
    per_class_metrics = {
        f"test_{metric.replace('-score', '')}_class_{name}": value
        for name, scores in evaluation.per_class.items()
        for metric, value in scores.items()
    }
    log_to_run(
        run_id,
        context,
        {**metrics, **per_class_metrics},
        [
            workdir / path
            for path in (paths.TEST_METRICS_FILE, paths.PER_CLASS_FILE, paths.CONFUSION_PNG)
        ],
        artifact_path="evaluation",
    )
    logger.info(
        "test accuracy %.4f, loss %.4f on %d %s test images",
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["test_images"],
        info.name,
    )
    return evaluation
