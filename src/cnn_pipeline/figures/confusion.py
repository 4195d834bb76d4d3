"""Which classes the network confuses: the confusion matrix, and F1 per class.

The confusion matrix holds every count; the per-class figure reads it for the reader: one bar
per class (its F1 on the test set), and beside it the two classes its images are most often
predicted as, with the share of its test images that went to each (on Fashion-MNIST: Shirt
against T-shirt/top, Pullover and Coat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline.figures import pyplot, save_figure

# Wrong classes named beside each class's bar: Shirt's two most frequent (T-shirt/top and
# Pullover, or Coat) say more than one, and three would crowd the line.
CONFUSIONS_NAMED = 2


@dataclass(frozen=True)
class Confusion:
    true_class: int
    predicted_class: int  # a class the true class's images are wrongly predicted as
    share: float  # of the true class's test images predicted as predicted_class


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: tuple[str, ...], normalize: bool, title: str, path: Path
) -> Any:
    """Counts (or, with `normalize`, each true class's shares) of true against predicted
    class, with every class name on both axes. Returns the saved figure."""
    from sklearn.metrics import ConfusionMatrixDisplay

    shown = confusion / confusion.sum(axis=1, keepdims=True).clip(min=1) if normalize else confusion
    # 0.6 inch per class keeps the numbers in the cells apart once counts reach thousands.
    side = max(6.4, 0.6 * len(class_names) + 2.0)
    figure, axes = pyplot().subplots(figsize=(side, side * 0.875))
    ConfusionMatrixDisplay(shown, display_labels=list(class_names)).plot(
        ax=axes, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d"
    )
    # Predicted-class names read bottom to top, each in its own column: written across, names
    # such as "T-shirt/top" and "Ankle boot" run into each other under neighbouring columns.
    for label in axes.get_xticklabels():
        label.set(rotation=90)
    axes.set_title(title)
    save_figure(figure, path)
    return figure


def most_confused_with(
    confusion: np.ndarray, count: int = CONFUSIONS_NAMED
) -> list[list[Confusion]]:
    """For each true class (a row of `confusion`), up to `count` of its wrong predictions,
    most frequent first (ties: the lower class index first); none for a class whose images
    were all recognised."""
    result: list[list[Confusion]] = []
    for true_class, row in enumerate(confusion):
        total = max(int(row.sum()), 1)
        wrong = [(int(n), c) for c, n in enumerate(row) if c != true_class and n > 0]
        wrong.sort(key=lambda item: (-item[0], item[1]))
        result.append([Confusion(true_class, c, n / total) for n, c in wrong[:count]])
    return result


def describe_confusion(confusions: list[Confusion], class_names: tuple[str, ...]) -> str:
    """ "taken for T-shirt/top (10%), Pullover (7%)", or "none of its images misread" (its F1
    can still be below 1: other classes' images taken for it)."""
    if not confusions:
        return "none of its images misread"
    # One decimal: a handful of images out of a thousand is 0.5%, not "0%".
    parts = [f"{class_names[item.predicted_class]} ({item.share:.1%})" for item in confusions]
    return f"taken for {', '.join(parts)}"


def plot_per_class_f1(
    f1_scores: list[float], confusion: np.ndarray, class_names: tuple[str, ...], path: Path
) -> Any:
    """One horizontal bar per class (F1, top to bottom in class order), each labelled with its
    score and the class it is most often mistaken for. Returns the saved figure."""
    count = len(class_names)
    notes = [describe_confusion(item, class_names) for item in most_confused_with(confusion)]
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8.0, 0.35 * count + 1.2))
    positions = np.arange(count)
    axes.barh(positions, f1_scores, color="tab:blue")
    axes.set_yticks(positions, labels=list(class_names))
    axes.invert_yaxis()  # the first class on top, as in the confusion matrix
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1 on the test set (harmonic mean of precision and recall)")
    for position, score, note in zip(positions, f1_scores, notes, strict=True):
        # Right of the axes, so a long note never covers a bar.
        axes.text(
            1.02,
            position,
            f"{score:.2f}  {note}",
            transform=axes.get_yaxis_transform(),
            verticalalignment="center",
            fontsize=8,
        )
    axes.set_title("F1 per class, and the class each is most often mistaken for", fontsize=10)
    save_figure(figure, path)
    return figure
