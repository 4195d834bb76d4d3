"""Which classes the network confuses: the confusion matrix, and F1 per class.

The confusion matrix holds every count; the per-class figure reads it for the reader: one bar
per class (its F1 on the test set), and beside it the class its images are most often
predicted as, with the share of its test images that went there (on Fashion-MNIST: Shirt
against T-shirt/top, Pullover and Coat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline.figures import pyplot, save_figure


@dataclass(frozen=True)
class Confusion:
    true_class: int
    predicted_class: int  # the class the true class's images are most often taken for
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


def most_confused_with(confusion: np.ndarray) -> list[Confusion | None]:
    """For each true class (a row of `confusion`), its most frequent wrong prediction; None
    for a class none of whose images was misclassified. Ties go to the lower class index."""
    result: list[Confusion | None] = []
    for true_class, row in enumerate(confusion):
        wrong = row.astype(float)
        wrong[true_class] = 0
        if wrong.max() == 0:
            result.append(None)
            continue
        predicted_class = int(wrong.argmax())
        result.append(Confusion(true_class, predicted_class, wrong.max() / max(row.sum(), 1)))
    return result


def describe_confusion(confusion: Confusion | None, class_names: tuple[str, ...]) -> str:
    if confusion is None:
        return "never mistaken"
    return f"{confusion.share:.0%} taken for {class_names[confusion.predicted_class]}"


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
