"""Load a trained model, from a .keras file or an MLflow model URI, never running its code.

Keras's safe mode refuses to deserialise Python code stored in a model file (a Lambda
layer's bytecode, say), so a downloaded model cannot run code on load.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_pipeline import paths
from cnn_pipeline.errors import UserError
from cnn_pipeline.images import POLARITIES, Polarity

MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass(frozen=True)
class TrainedModel:
    model: Any  # keras.Model
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # what the model takes: (height, width, channels)
    # The training images' polarity (predict inverts images that differ); None for a model
    # trained before it was recorded.
    polarity: Polarity | None = None


def load_keras_file(path: Path) -> Any:
    if not path.is_file():  # before Keras's import, which takes seconds
        raise UserError(f"{path} is missing: run `dvc repro train` first, or pass --model")
    import keras

    # A model trained with 32 steps per execution (training.STEPS_PER_EXECUTION) keeps that
    # setting. Predicting on Keras's numpy backend, Keras's generic batch iterator then says
    # "Your input ran out of data; interrupting training" at the last, shorter run of
    # batches: nothing is lost there (every test image is predicted, as tests/test_backends.py
    # checks against TensorFlow), so that one message is not shown.
    warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error) or "lambda" in str(error).lower():
            raise UserError(
                f"{path} was refused: it contains Python code (a Lambda layer) and loading it "
                "could run that code. Only load such a file if you trust its source, with "
                "keras.saving.load_model(path, safe_mode=False)"
            ) from None
        raise UserError(f"{path} is not a readable Keras model: {error}") from None


def load(source: str, tracking_uri: str) -> TrainedModel:
    """`source`: a .keras path (its class names from models/model.json beside it) or an
    MLflow model URI such as models:/cnn-pipeline/3, models:/cnn-pipeline@champion, runs:/ID/model,
    looked up in the MLflow store at `tracking_uri`.
    """
    if source.startswith(MLFLOW_URI_SCHEMES):
        return _load_mlflow(source, tracking_uri)
    path = Path(source)
    info = _model_info(path)  # both files checked before Keras's import
    model = load_keras_file(path)
    polarity = _polarity(info, str(path.parent / paths.MODEL_INFO_FILE.name))
    return TrainedModel(model, tuple(info["class_names"]), _shape(model), polarity)


def model_input(source: str, tracking_uri: str) -> tuple[tuple[int, int, int], Polarity | None]:
    """The image shape (height, width, channels) and training polarity of a model, read from
    models/model.json or the registered model's metadata, without loading the model."""
    if source.startswith(MLFLOW_URI_SCHEMES):
        import mlflow.models
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(tracking_uri)
        try:
            info = mlflow.models.get_model_info(source).metadata or {}
        except MlflowException as error:
            raise UserError(
                f"cannot read {source} from MLflow ({tracking_uri}): "
                f"{error.message.splitlines()[0].rstrip('.')}"
            ) from None
        where = f"{source}'s metadata"
    else:
        info, where = (
            _model_info(Path(source)),
            str(Path(source).parent / paths.MODEL_INFO_FILE.name),
        )
    shape = info.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3):
        raise UserError(
            f"{where} does not give the model's image_shape: retrain it with `dvc repro train`"
        )
    height, width, channels = (int(size) for size in shape)
    return (height, width, channels), _polarity(info, where)


def _model_info(path: Path) -> dict[str, Any]:
    """models/model.json beside the .keras file `path`, which must exist too."""
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro train` first, or pass --model")
    info_path = path.parent / paths.MODEL_INFO_FILE.name
    if not info_path.is_file():
        raise UserError(
            f"{info_path} is missing: it names the classes of {path}; "
            "run `dvc repro train` to write both"
        )
    info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
    return info


def _load_mlflow(uri: str, tracking_uri: str) -> TrainedModel:
    """A model the train stage logged: MLflow's pyfunc `serving.ImageClassifier`, whose Keras
    model is loaded in safe mode."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        raise UserError(
            f"cannot load {uri} from MLflow ({mlflow.get_tracking_uri()}): "
            f"{error.message.splitlines()[0]}"
        ) from None
    except ValueError as error:
        raise UserError(f"{uri} was refused or unreadable: {error}") from None
    classifier = loaded.unwrap_python_model()
    if not hasattr(classifier, "class_names"):
        raise UserError(f"{uri} is not an image classifier logged by this pipeline's train stage")
    metadata = loaded.metadata.metadata or {}
    polarity = _polarity(metadata, f"{uri}'s metadata")
    return TrainedModel(
        classifier.model, tuple(classifier.class_names), _shape(classifier.model), polarity
    )


def _polarity(info: dict[str, Any], where: str) -> Polarity | None:
    polarity = info.get("polarity")
    if polarity is not None and polarity not in POLARITIES:
        raise UserError(
            f"{where}: polarity = {polarity!r} is invalid: expected one of {list(POLARITIES)} "
            "or none: retrain it with `dvc repro train`"
        )
    return polarity


def _shape(model: Any) -> tuple[int, int, int]:
    _, height, width, channels = model.input_shape
    return (int(height), int(width), int(channels))
