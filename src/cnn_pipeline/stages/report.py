"""Report stage: figures of what the trained network learned and how far to trust it.

Draws the training curves, the first layer's filters, every convolution's activation maps
for a few test images, the most confident mistakes, and a reliability diagram with the
expected calibration error; adds them all to the model's MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnn_pipeline import paths
from cnn_pipeline.atomic import write_json
from cnn_pipeline.config import ReportConfig
from cnn_pipeline.figures.calibration import plot_reliability, reliability
from cnn_pipeline.figures.curves import plot_training_curves
from cnn_pipeline.figures.features import plot_activation_maps, plot_first_layer_filters
from cnn_pipeline.figures.mistakes import plot_mistakes
from cnn_pipeline.prepared import load_info, load_split
from cnn_pipeline.tracking.runs import log_to_run, read_run_id
from cnn_pipeline.tracking.store import TrackingContext
from cnn_pipeline.trained_model import load_keras_file

logger = logging.getLogger(__name__)

FIGURES = (
    paths.TRAINING_CURVES_PNG,
    paths.FILTERS_PNG,
    paths.ACTIVATIONS_PNG,
    paths.MISTAKES_PNG,
    paths.CALIBRATION_PNG,
)


def activation_caption(class_names: tuple[str, ...], label: int, predicted: int) -> str:
    """The image's class, and what the network took it for where that differs."""
    if label == predicted:
        return class_names[label]
    return f"{class_names[label]}, predicted {class_names[predicted]}"


def run(
    config: ReportConfig, context: TrackingContext, workdir: Path, batch_size: int
) -> dict[str, float]:
    """Write the figures under workdir/reports/ and the calibration metrics; log them.

    `batch_size`: test images per inference step, params.yaml's evaluate.batch_size (one
    setting for every pass over the test set; it changes speed only).
    """
    run_id = read_run_id(workdir / paths.RUN_FILE)
    info = load_info(workdir / paths.PREPARED_DIR)
    test = load_split(workdir / paths.PREPARED_DIR, "test")
    model = load_keras_file(workdir / paths.MODEL_FILE)
    probabilities = model.predict(test.images, batch_size=batch_size, verbose=0)

    plot_training_curves(workdir / paths.HISTORY_FILE, workdir / paths.TRAINING_CURVES_PNG)
    plot_first_layer_filters(model, workdir / paths.FILTERS_PNG)
    shown = test.images[: config.activation_images]
    predicted = probabilities.argmax(axis=1)
    plot_activation_maps(
        model,
        shown,
        workdir / paths.ACTIVATIONS_PNG,
        [
            activation_caption(info.class_names, test.labels[i], predicted[i])
            for i in range(len(shown))
        ],
    )
    misclassified = plot_mistakes(
        test.images,
        test.labels,
        probabilities,
        info.class_names,
        config.mistakes_shown,
        workdir / paths.MISTAKES_PNG,
    )
    calibration = reliability(probabilities, test.labels, config.calibration_bins)
    plot_reliability(
        calibration, f"{model.name} on {info.name} test set", workdir / paths.CALIBRATION_PNG
    )
    metrics = {
        "test_expected_calibration_error": round(calibration.expected_calibration_error, 5),
        "test_misclassified": misclassified,
    }
    write_json(metrics, workdir / paths.CALIBRATION_METRICS_FILE)
    log_to_run(
        run_id,
        context,
        metrics,
        [workdir / path for path in (*FIGURES, paths.CALIBRATION_METRICS_FILE)],
        artifact_path="reports",
    )
    logger.info(
        "%d misclassified test images; expected calibration error %.4f; figures in %s",
        misclassified,
        calibration.expected_calibration_error,
        (workdir / paths.FILTERS_PNG).parent,
    )
    return metrics
