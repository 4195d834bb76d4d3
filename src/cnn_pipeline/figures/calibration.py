"""Calibration: does a prediction made with 90% confidence turn out right 90% of the time?

The reliability diagram bins test predictions by confidence and plots each bin's accuracy
against its mean confidence; the expected calibration error (ECE) is the average gap,
weighted by how many predictions fall in each bin (Guo et al., 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_pipeline.figures import pyplot, save_figure


@dataclass(frozen=True)
class Reliability:
    bin_edges: np.ndarray  # (bins + 1,) confidence edges from 0 to 1
    confidence: np.ndarray  # (bins,) mean confidence per bin (nan where empty)
    accuracy: np.ndarray  # (bins,) accuracy per bin (nan where empty)
    counts: np.ndarray  # (bins,) predictions per bin
    expected_calibration_error: float


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> Reliability:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of exactly 0 cannot occur.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_confidence), 0.0)
    ece = float(np.sum(gaps * counts) / len(labels))
    return Reliability(edges, mean_confidence, accuracy, counts, ece)


def plot_reliability(result: Reliability, title: str, path: Path) -> None:
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    centres = (result.bin_edges[:-1] + result.bin_edges[1:]) / 2
    width = result.bin_edges[1] - result.bin_edges[0]
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.bar(
        centres,
        np.nan_to_num(result.accuracy),
        width=width * 0.9,
        edgecolor="black",
        alpha=0.8,
        label="accuracy in bin",
    )
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"{title}\nexpected calibration error {result.expected_calibration_error:.4f}")
    top.legend(loc="upper left")
    bottom.bar(centres, result.counts, width=width * 0.9, color="grey")
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence (highest class probability)")
    bottom.set_ylabel("test images")
    save_figure(figure, path)
