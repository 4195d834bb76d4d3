"""Classify new images with a trained model: any PNG/JPEG/BMP/GIF, converted and resized
exactly as the training images were (`images.read_image`), with the top classes and their
probabilities."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cnn_pipeline.images import Polarity, UnreadableImage, read_image, should_invert
from cnn_pipeline.trained_model import TrainedModel

Invert = Literal["auto", "yes", "no"]


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (class name, probability), most probable first


@dataclass(frozen=True)
class Unreadable:
    image: str
    reason: str


def load_image(
    path: Path, image_shape: tuple[int, int, int], invert: Invert, trained_on: Polarity | None
) -> np.ndarray:
    """Read an image file as the uint8 (height, width, channels) array the model takes.

    A scan of ink on paper is dark on light; digits and MNIST are light strokes on black.
    With invert="auto", a grayscale image is inverted when its polarity is the opposite of
    the training images' (`trained_on`, from models/model.json); colour images never are.
    Raises UnreadableImage for a file that is not a readable image (or is too large).
    """
    height, width, channels = image_shape
    array = read_image(path, height, width, channels)
    if channels == 1 and (
        invert == "yes" or (invert == "auto" and should_invert(array, trained_on))
    ):
        array = 255 - array
    return array


def predict_files(
    trained: TrainedModel, files: list[Path], top: int, invert: Invert
) -> tuple[list[Prediction], list[Unreadable]]:
    images: list[np.ndarray] = []
    readable: list[Path] = []
    unreadable: list[Unreadable] = []
    for path in files:
        try:
            images.append(load_image(path, trained.image_shape, invert, trained.polarity))
            readable.append(path)
        except UnreadableImage as error:
            unreadable.append(Unreadable(str(path), str(error)))
    predictions: list[Prediction] = []
    if images:
        probabilities = np.asarray(trained.model.predict(np.stack(images), verbose=0))
        for path, row in zip(readable, probabilities, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            predictions.append(
                Prediction(str(path), [(trained.class_names[i], float(row[i])) for i in best])
            )
    return predictions, unreadable


def request_body(
    files: list[Path],
    image_shape: tuple[int, int, int],
    invert: Invert,
    trained_on: Polarity | None,
) -> tuple[dict[str, list[object]], list[Unreadable]]:
    """The JSON request `mlflow models serve` answers for these image files: {"inputs": [one
    (height, width, channels) list of 0-255 pixels per image]}, read exactly as `predict`
    reads them (the served model does not resize, convert or invert)."""
    images: list[object] = []
    unreadable: list[Unreadable] = []
    for path in files:
        try:
            images.append(load_image(path, image_shape, invert, trained_on).tolist())
        except UnreadableImage as error:
            unreadable.append(Unreadable(str(path), str(error)))
    return {"inputs": images}, unreadable


def print_request(body: dict[str, list[object]], unreadable: list[Unreadable]) -> None:
    """The request on stdout, one line (for `curl --data @-`), and one line per unreadable
    file on stderr."""
    if body["inputs"]:
        print(json.dumps(body, separators=(",", ":")))
    for failure in unreadable:
        print(
            f"cnn-pipeline predict: cannot read {failure.image}: {failure.reason}", file=sys.stderr
        )


def print_results(
    predictions: list[Prediction], unreadable: list[Unreadable], as_json: bool
) -> None:
    """One line per image on stdout ("digit.png: 7 99.8%, 1 0.1%, ..." or a JSON object),
    and one line per unreadable file on stderr (also as JSON on stdout with `as_json`)."""
    for prediction in predictions:
        if as_json:
            top = [{"class": name, "probability": p} for name, p in prediction.top]
            print(json.dumps({"image": prediction.image, "top": top}))
        else:
            ranked = ", ".join(f"{name} {p:.1%}" for name, p in prediction.top)
            print(f"{prediction.image}: {ranked}")
    for failure in unreadable:
        if as_json:
            print(json.dumps({"image": failure.image, "error": failure.reason}))
        print(
            f"cnn-pipeline predict: cannot read {failure.image}: {failure.reason}", file=sys.stderr
        )
