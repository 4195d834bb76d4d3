"""The model as MLflow logs, registers and serves it: the trained Keras network behind MLflow's
`pyfunc` interface, answering class names with probabilities.

MLflow loads this file by itself ("models from code": it is copied into each logged model),
so it imports nothing from cnn_pipeline and needs only Keras, its backend, NumPy and pandas:
`mlflow models serve` runs it wherever those are installed.

    model = mlflow.pyfunc.load_model("models:/cnn-pipeline@champion")
    model.predict(images)            # (N, height, width, channels), raw 0-255 pixels
    #   class  probability         0         1  ...   <- one column per class name
    # 0     7        0.998  0.000012  0.000081  ...
    model.unwrap_python_model().model   # the Keras model itself
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel

KERAS_MODEL_ARTIFACT = "keras_model"  # the .keras file, as `keras.saving.load_model` reads it
MODEL_INFO_ARTIFACT = "model_info"  # models/model.json: class names and input shape
# How a request is written from image files, which the served model does not resize or invert.
REQUEST_COMMAND = "cnn-pipeline predict --request IMAGE"
# The scoring server quotes the whole request before any error it answers ("Failed to predict
# data '...'"): numpy summarises arrays of more values than this, so the quote stays short.
QUOTED_VALUES = 10
# NVIDIA's driver writes this file once its kernel module is loaded (accelerators.py reads it too).
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")

# TensorFlow's C++ notices, read when Keras first imports it (in load_context): without an
# NVIDIA driver its only error is its failing look for CUDA ("E0000 ... failed call to
# cuInit"), which reads as a failure of the server; with a driver its errors may matter.
if not NVIDIA_DRIVER_FILE.exists() and shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class ImageClassifier(PythonModel):
    """Probabilities per class name for each image, and the most probable class."""

    model: Any
    class_names: list[str]
    image_shape: tuple[int, int, int]
    polarity: str | None

    def load_context(self, context: Any) -> None:
        import keras

        # Safe mode: a model file carrying Python code (a Lambda layer) is refused, not run.
        self.model = keras.saving.load_model(
            context.artifacts[KERAS_MODEL_ARTIFACT], safe_mode=True
        )
        info = json.loads(Path(context.artifacts[MODEL_INFO_ARTIFACT]).read_text("utf-8"))
        self.class_names = [str(name) for name in info["class_names"]]
        _, *shape = self.model.input_shape
        self.image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.polarity = info.get("polarity")
        np.set_printoptions(threshold=QUOTED_VALUES, edgeitems=2)

    # The input is checked here, not by a signature: MLflow's own check would answer a wrong
    # shape with the whole array twice, and casts JSON numbers to the signature's dtype first,
    # so that pixels scaled to 0-1 would reach the model as black images.
    # `np.ndarray` is a type hint MLflow reads no schema from; without any hint it asks for one
    # in a warning at every import.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        images = raw_pixels(model_input, self.image_shape, self.polarity)
        probabilities = np.asarray(self.model.predict(images, verbose=0))
        return table(probabilities, self.class_names)


def expected_input(image_shape: tuple[int, int, int], polarity: str | None) -> str:
    """'(N, 8, 8, 1) raw 0-255 pixels (8x8 grayscale, light on dark)': what the model takes."""
    height, width, channels = image_shape
    colour = "grayscale" if channels == 1 else "RGB"
    strokes = {"light_on_dark": ", light on dark", "dark_on_light": ", dark on light"}
    return (
        f"(N, {height}, {width}, {channels}) raw 0-255 pixels "
        f"({height}x{width} {colour}{strokes.get(polarity or '', '')})"
    )


def raw_pixels(
    model_input: Any, image_shape: tuple[int, int, int], polarity: str | None = None
) -> np.ndarray:
    """`model_input` as the uint8 (N, height, width, channels) array the model takes, or an
    MlflowException (HTTP 400 from `mlflow models serve`) that says in one line what was
    wrong and what the model expects: a wrong shape or dtype, or pixels outside 0-255 or
    scaled to 0-1, which the model would misread without an error."""
    expected = expected_input(image_shape, polarity)

    def refuse(problem: str) -> MlflowException:
        return MlflowException(
            f"{problem}; the model takes {expected}. It does not resize, convert or invert: "
            f"`{REQUEST_COMMAND}` writes a request from an image file",
            error_code=INVALID_PARAMETER_VALUE,
        )

    if isinstance(model_input, pd.DataFrame):
        raise refuse('the request is a table (dataframe_split/records); send {"inputs": images}')
    try:
        images = np.asarray(model_input)
    except ValueError:  # lists of unequal lengths
        images = np.asarray(model_input, dtype=object)
    if images.dtype == object:
        raise refuse("the images are of unequal sizes, or not arrays of numbers")
    if images.dtype.kind not in "uif":
        kind = {"U": "text", "S": "text", "b": "true/false"}.get(images.dtype.kind, images.dtype)
        raise refuse(f"the pixels are {kind} values, not numbers")
    if images.ndim != 4 or tuple(images.shape[1:]) != image_shape:
        raise refuse(f"the input has shape {images.shape}")
    if images.size == 0:
        return images.astype(np.uint8)
    if not np.isfinite(images).all():
        raise refuse("some pixels are NaN or infinite")
    lowest, highest = float(images.min()), float(images.max())
    if lowest < 0 or highest > 255:
        raise refuse(f"the pixels range from {lowest:g} to {highest:g}")
    if 0 < highest <= 1:  # a raw image this dark is black: these were divided by 255
        raise refuse(
            f"the pixels look scaled to 0-1 (largest {highest:g}): send raw pixels "
            "(multiply by 255)"
        )
    if not np.array_equal(images, np.round(images)):
        raise refuse("some pixels are fractions: send whole numbers 0-255")
    return images.astype(np.uint8)


def table(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per image: the most probable class, its probability, then every class's."""
    best = probabilities.argmax(axis=1)
    columns: dict[str, Any] = {
        "class": [class_names[index] for index in best],
        "probability": probabilities.max(axis=1).astype(float),
    }
    for index, name in enumerate(class_names):
        columns[name] = probabilities[:, index].astype(float)
    return pd.DataFrame(columns)


mlflow.models.set_model(ImageClassifier())
