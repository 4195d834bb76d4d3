"""MLflow's keras flavour, written from a saved .keras file without importing Keras.

`mlflow.keras.log_model` takes a Keras model object, so the process that logs the model
must import Keras and its backend (TensorFlow: ~5 s of CPU here). The train stage records
its run from a process beside training (`tracking.BackgroundRun`), where those seconds are
taken from training; that process logs the file training saved instead, with this module.

What `save_model` writes is what `mlflow.keras.save_model(model, path, signature=...,
metadata=..., pip_requirements=...)` writes for the same model, file for file
(tests/test_keras_flavor.py compares the two), so `mlflow.keras.load_model`, pyfunc and
`mlflow models serve` treat it as any keras-flavour model. Its environment files come from
the helpers MLflow's own flavours use; those are private to MLflow, which is why that test
exists: an MLflow upgrade that changes the layout fails it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

# The keras flavour's names: mlflow/keras/save.py.
FLAVOR_NAME = "keras"
LOGGED_MODEL_FLAVOR = "mlflow.keras"  # what `mlflow.keras.log_model` records as the flavour
DATA_DIR = "data"
MODEL_FILE = "model.keras"
KERAS_MODULE_FILE = "keras_module.txt"


def log_model(
    keras_file: Path,
    *,
    keras_version: str,
    keras_backend: str,
    signature: Any,
    registered_model_name: str | None,
    metadata: dict[str, Any] | None,
    pip_requirements: list[str],
) -> Any:
    """`mlflow.keras.log_model(model, name="model", ...)` for the model saved at
    `keras_file` by Keras `keras_version` on `keras_backend`, into the active run."""
    from mlflow.models import Model

    return Model.log(
        artifact_path=None,  # deprecated in favour of `name`, but still a required argument
        name="model",
        flavor=sys.modules[__name__],
        flavor_name=LOGGED_MODEL_FLAVOR,
        registered_model_name=registered_model_name,
        metadata=metadata,
        keras_file=keras_file,
        keras_version=keras_version,
        keras_backend=keras_backend,
        signature=signature,
        pip_requirements=pip_requirements,
    )


def save_model(
    path: str | Path,
    *,
    keras_file: Path,
    keras_version: str,
    keras_backend: str,
    signature: Any,
    pip_requirements: list[str],
    mlflow_model: Any = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write the keras-flavour MLflow model for `keras_file` into the new folder `path`
    (`Model.log` calls this with its own `mlflow_model`)."""
    import yaml
    from mlflow import pyfunc
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _CONSTRAINTS_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _process_pip_requirements,
        _PythonEnv,
    )
    from mlflow.utils.file_utils import get_total_file_size

    path = Path(path)
    if mlflow_model is None:
        mlflow_model = Model()
    mlflow_model.signature = signature
    if metadata is not None:
        mlflow_model.metadata = metadata

    data_dir = path / DATA_DIR
    data_dir.mkdir(parents=True)
    (data_dir / KERAS_MODULE_FILE).write_text("keras", encoding="utf-8")
    shutil.copyfile(keras_file, data_dir / MODEL_FILE)

    mlflow_model.add_flavor(
        FLAVOR_NAME,
        data=DATA_DIR,
        keras_version=keras_version,
        keras_backend=keras_backend,
        save_exported_model=False,
    )
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=LOGGED_MODEL_FLAVOR,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    if size := get_total_file_size(path):
        mlflow_model.model_size_bytes = size
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))

    # The environment files, as mlflow.keras.save_model writes them for given requirements.
    processed = _process_pip_requirements(None, pip_requirements)  # type: ignore[no-untyped-call]
    conda_env, requirements, constraints = processed
    with open(path / _CONDA_ENV_FILE_NAME, "w", encoding="utf-8") as file:
        yaml.safe_dump(conda_env, stream=file, default_flow_style=False)
    if constraints:
        (path / _CONSTRAINTS_FILE_NAME).write_text("\n".join(constraints), encoding="utf-8")
    (path / _REQUIREMENTS_FILE_NAME).write_text("\n".join(requirements), encoding="utf-8")
    python_env = _PythonEnv.current()  # type: ignore[no-untyped-call]
    python_env.to_yaml(str(path / _PYTHON_ENV_FILE_NAME))
