"""The test images the network got wrong, most confident mistakes first."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnn_pipeline.figures import pyplot, save_figure


def most_confident_mistakes(
    probabilities: np.ndarray, labels: np.ndarray, limit: int
) -> np.ndarray:
    """Indices of misclassified images, sorted by the confidence of the wrong answer."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def plot_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: tuple[str, ...],
    limit: int,
    path: Path,
) -> int:
    """Draw up to `limit` mistakes with true class, predicted class and confidence.

    Returns how many test images were misclassified in all.
    """
    predicted = probabilities.argmax(axis=1)
    total = int(np.sum(predicted != labels))
    chosen = most_confident_mistakes(probabilities, labels, limit)
    columns = max(1, min(5, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    plt = pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.1 + 0.5))
    for axis in np.atleast_1d(axes).ravel():
        axis.axis("off")
    for axis, index in zip(np.atleast_1d(axes).ravel(), chosen, strict=False):
        image = images[index]
        axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axis.set_title(
            f"true {class_names[labels[index]]}\npredicted {class_names[predicted[index]]}"
            f" ({probabilities[index, predicted[index]]:.0%})",
            fontsize=8,
        )
    figure.suptitle(
        f"{total} of {len(labels)} test images misclassified; "
        f"the {len(chosen)} most confident mistakes",
        fontsize=9,
    )
    save_figure(figure, path)
    return total
