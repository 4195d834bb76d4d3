"""The test images the network got wrong, most confident mistakes first."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from cnn_pipeline.figures import pyplot, save_figure

# Each image is drawn this many inches a side (160 pixels at the PNG's 100 dpi): a 28x28
# image shows every pixel as a 5x5 block, large enough to see what the network saw.
TILE_INCHES = 1.6
# A title line holds this many characters at 8 points in a tile's width (2 inches with its
# margin); longer class names wrap onto further lines instead of running into the neighbours.
TITLE_CHARACTERS = 30


def most_confident_mistakes(
    probabilities: np.ndarray, labels: np.ndarray, limit: int
) -> np.ndarray:
    """Indices of misclassified images, sorted by the confidence of the wrong answer."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def mistake_title(true_name: str, predicted_name: str, confidence: float) -> str:
    """'true X' then 'predicted Y (97%)', each wrapped to the tile's width."""
    lines = [f"true {true_name}", f"predicted {predicted_name} ({confidence:.0%})"]
    return "\n".join(
        textwrap.fill(line, TITLE_CHARACTERS, break_on_hyphens=False) for line in lines
    )


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
    titles = [
        mistake_title(
            class_names[labels[index]],
            class_names[predicted[index]],
            float(probabilities[index, predicted[index]]),
        )
        for index in chosen
    ]
    title_lines = max((title.count("\n") + 1 for title in titles), default=2)
    columns = max(1, min(5, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    # Each row: the image plus its title's lines (0.17 inch each at 8 points) and a margin.
    row_inches = TILE_INCHES + 0.17 * title_lines + 0.15
    plt = pyplot()
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * (TILE_INCHES + 0.4), rows * row_inches + 0.5)
    )
    for axis in np.atleast_1d(axes).ravel():
        axis.axis("off")
    for axis, index, title in zip(np.atleast_1d(axes).ravel(), chosen, titles, strict=False):
        image = images[index]
        # "nearest": each pixel a sharp square, as the network saw it, not a smoothed blur.
        axis.imshow(
            image.squeeze(),
            cmap="gray" if image.shape[-1] == 1 else None,
            interpolation="nearest",
        )
        axis.set_title(title, fontsize=8)
    figure.suptitle(
        f"{total} of {len(labels)} test images misclassified; "
        f"the {len(chosen)} most confident mistakes",
        fontsize=9,
    )
    save_figure(figure, path)
    return total
