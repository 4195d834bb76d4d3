"""Training curves: loss and accuracy per epoch, on the training and validation images."""

from __future__ import annotations

import csv
from pathlib import Path

from cnn_pipeline.figures import pyplot, save_figure


def plot_training_curves(history_csv: Path, path: Path) -> None:
    with history_csv.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    epochs = [int(row["epoch"]) for row in rows]
    plt = pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(epochs, [float(row[metric]) for row in rows], marker=".", label="train")
        axis.plot(
            epochs, [float(row[f"val_{metric}"]) for row in rows], marker=".", label="validation"
        )
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    loss_axis.set_title("loss (lower is better)")
    accuracy_axis.set_title("accuracy")
    save_figure(figure, path)
