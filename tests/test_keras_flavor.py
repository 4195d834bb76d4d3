"""keras_flavor writes, from a saved .keras file, the model `mlflow.keras` would write: same
files, same MLmodel. (That it needs no Keras to log one, and that the registered model loads,
is in test_tracking.py.)"""

from __future__ import annotations

import filecmp
from pathlib import Path

import keras
import mlflow.keras
import numpy as np
import yaml

from cnn_pipeline import keras_flavor

REQUIREMENTS = ["keras", "numpy"]
# What differs between two saves of one model: identity, time, and (model.keras holds its
# save date) the file's bytes and so the size.
PER_SAVE = {"model_uuid", "utc_time_created", "model_size_bytes"}


def small_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_writes_what_mlflow_keras_save_model_writes(tmp_path: Path) -> None:
    model = small_model()
    model.save(tmp_path / "model.keras")
    sample = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    signature = mlflow.models.infer_signature(sample, model.predict(sample, verbose=0))
    metadata = {"class_names": list("0123456789")}
    mlflow.keras.save_model(
        model,
        str(tmp_path / "by_mlflow"),
        signature=signature,
        metadata=metadata,
        pip_requirements=REQUIREMENTS,
    )
    keras_flavor.save_model(
        tmp_path / "ours",
        keras_file=tmp_path / "model.keras",
        keras_version=keras.__version__,
        keras_backend=keras.config.backend(),
        signature=signature,
        metadata=metadata,
        pip_requirements=REQUIREMENTS,
    )

    by_mlflow, ours = tmp_path / "by_mlflow", tmp_path / "ours"
    assert files_under(ours) == files_under(by_mlflow)
    for name in files_under(by_mlflow) - {"MLmodel", "data/model.keras"}:
        assert filecmp.cmp(ours / name, by_mlflow / name, shallow=False), name

    def mlmodel(folder: Path) -> dict[str, object]:
        document = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
        return {key: value for key, value in document.items() if key not in PER_SAVE}

    assert mlmodel(ours) == mlmodel(by_mlflow)
    assert filecmp.cmp(ours / "data/model.keras", tmp_path / "model.keras", shallow=False)
