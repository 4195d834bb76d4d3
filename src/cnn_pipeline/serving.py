"""The model as MLflow logs, registers and serves it: the trained Keras network behind MLflow's
`pyfunc` interface, answering class names with probabilities.

MLflow loads this file by itself ("models from code": it is copied into each logged model),
so it imports nothing from cnn_pipeline and needs only Keras, its backend, NumPy and pandas:
`mlflow models serve` runs it wherever those are installed.

    model = mlflow.pyfunc.load_model("models:/cnn-pipeline@champion")
    model.predict(images)            # uint8 (N, height, width, channels), raw 0-255 pixels
    #   class  probability         0         1  ...   <- one column per class name
    # 0     7        0.998  0.000012  0.000081  ...
    model.unwrap_python_model().model   # the Keras model itself
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

KERAS_MODEL_ARTIFACT = "keras_model"  # the .keras file, as `keras.saving.load_model` reads it
MODEL_INFO_ARTIFACT = "model_info"  # models/model.json: class names and input shape


class ImageClassifier(PythonModel):
    """Probabilities per class name for each image, and the most probable class."""

    model: Any
    class_names: list[str]

    def load_context(self, context: Any) -> None:
        import keras

        # Safe mode: a model file carrying Python code (a Lambda layer) is refused, not run.
        self.model = keras.saving.load_model(
            context.artifacts[KERAS_MODEL_ARTIFACT], safe_mode=True
        )
        info = json.loads(Path(context.artifacts[MODEL_INFO_ARTIFACT]).read_text("utf-8"))
        self.class_names = [str(name) for name in info["class_names"]]

    # `np.ndarray` is a type hint MLflow reads no schema from (the logged signature, uint8
    # images, is the schema); without any hint it asks for one in a warning at every import.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        probabilities = np.asarray(self.model.predict(np.asarray(model_input), verbose=0))
        return table(probabilities, self.class_names)


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
