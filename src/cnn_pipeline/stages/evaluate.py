"""Evaluate stage: test the trained model on the test set it never saw during training.

Writes test loss, accuracy and per-class precision/recall/F1 (metrics/evaluate.json, for
`dvc metrics show`), every test prediction (a DVC confusion plot) and a confusion-matrix
PNG, and adds them to the MLflow run that train created.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline import paths
from cnn_pipeline.atomic import atomic_path
from cnn_pipeline.config import EvaluateConfig
from cnn_pipeline.errors import UserError
from cnn_pipeline.prepared import DatasetInfo, load_info, load_split
from cnn_pipeline.tracking import TrackingContext

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


def _write_confusion_png(
    confusion: np.ndarray, class_names: tuple[str, ...], normalize: bool, title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    shown = confusion / confusion.sum(axis=1, keepdims=True).clip(min=1) if normalize else confusion
    figure, axes = plt.subplots(figsize=(6.4, 5.6))
    ConfusionMatrixDisplay(shown, display_labels=list(class_names)).plot(
        ax=axes, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d"
    )
    axes.set_title(title)
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, format="png", dpi=100)
    plt.close(figure)


def _log_to_mlflow(
    run_id: str, evaluation: Evaluation, context: TrackingContext, workdir: Path
) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(context.tracking_uri)
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        logger.warning(
            "MLflow run %s is not in %s (was the store deleted?); test metrics were not logged "
            "to MLflow. `dvc repro -f train` starts a new run",
            run_id,
            context.tracking_uri,
        )
        return False
    metrics = evaluation.metrics
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        mlflow.log_metrics(
            {
                f"test_{metric.replace('-score', '')}_class_{name}": value
                for name, scores in evaluation.per_class.items()
                for metric, value in scores.items()
            }
        )
        for path in (paths.TEST_METRICS_FILE, paths.PER_CLASS_FILE, paths.CONFUSION_PNG):
            mlflow.log_artifact(str(workdir / path), artifact_path="evaluation")
    return True


def run(config: EvaluateConfig, context: TrackingContext, workdir: Path) -> Evaluation:
    """Evaluate workdir/models/model.keras on the prepared test split; write and log results."""
    import keras

    model_path = workdir / paths.MODEL_FILE
    run_path = workdir / paths.RUN_FILE
    for required in (model_path, run_path):
        if not required.is_file():
            raise UserError(f"{required} is missing: run `dvc repro train` first")
    info = load_info(workdir / paths.PREPARED_DIR)
    test = load_split(workdir / paths.PREPARED_DIR, "test")
    model = keras.saving.load_model(model_path)  # safe_mode (no code from the file) is the default
    evaluation = evaluate_model(model, test.images, test.labels, info, config.batch_size)

    metrics = evaluation.metrics
    for path, document in (
        (paths.TEST_METRICS_FILE, metrics),
        (paths.PER_CLASS_FILE, evaluation.per_class),
    ):
        with atomic_path(workdir / path) as staged:
            staged.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
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
    run_id = json.loads(run_path.read_text(encoding="utf-8"))["run_id"]
    _log_to_mlflow(run_id, evaluation, context, workdir)
    logger.info(
        "test accuracy %.4f, loss %.4f on %d %s test images",
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["test_images"],
        info.name,
    )
    return evaluation
