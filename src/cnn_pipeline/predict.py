"""Classify new images with a trained model: any PNG/JPEG, resized and converted to what the
model takes, with the top classes and their probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

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


def load_image(path: Path, image_shape: tuple[int, int, int], invert: Invert) -> np.ndarray:
    """Read an image file as the uint8 (height, width, channels) array the model takes.

    Digits and MNIST are light strokes on a dark background; a scan or photo of ink on paper
    is the opposite. With invert="auto", a grayscale image whose mean is light is inverted.
    Raises OSError or ValueError (from Pillow) for a file that is not a readable image.
    """
    from PIL import Image, ImageOps

    height, width, channels = image_shape
    with Image.open(path) as opened:
        opened.seek(0)  # the first frame of an animated GIF
        image = opened.convert("L" if channels == 1 else "RGB")
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    mostly_light = np.asarray(image).mean() > 127
    if channels == 1 and (invert == "yes" or (invert == "auto" and mostly_light)):
        image = ImageOps.invert(image)
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(height, width, channels)


def predict_files(
    trained: TrainedModel, files: list[Path], top: int, invert: Invert
) -> tuple[list[Prediction], list[Unreadable]]:
    images: list[np.ndarray] = []
    readable: list[Path] = []
    unreadable: list[Unreadable] = []
    for path in files:
        try:
            images.append(load_image(path, trained.image_shape, invert))
            readable.append(path)
        except (OSError, ValueError) as error:
            reason = "no such file" if isinstance(error, FileNotFoundError) else str(error)
            unreadable.append(Unreadable(str(path), reason))
    predictions: list[Prediction] = []
    if images:
        probabilities = np.asarray(trained.model.predict(np.stack(images), verbose=0))
        for path, row in zip(readable, probabilities, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            predictions.append(
                Prediction(str(path), [(trained.class_names[i], float(row[i])) for i in best])
            )
    return predictions, unreadable
