"""The trained model in MLflow: logged to its run and registered as a new version of the
registered model, as the team uses it: every version says what it was trained on and how it
scored on the test set; an alias (`champion` by default) marks the version to use, so that
`cnn-pipeline predict --model models:/cnn-pipeline@champion` and `mlflow models serve` find it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnn_pipeline.errors import UserError
from cnn_pipeline.tracking.store import TrackingContext

logger = logging.getLogger(__name__)

DEFAULT_ALIAS = "champion"
RANKING_METRIC = "test_accuracy"  # the version tag `promote` picks the best version by


def log_and_register_model(
    model: Any,
    *,
    keras_file: Path,
    model_info_file: Path,
    sample_images: Any,
    registered_model_name: str,
    metadata: dict[str, Any],
    pip_requirements: list[str],
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    documents: Mapping[str, dict[str, Any]],
) -> None:
    """Log `model`, saved at `keras_file`, to the active run as `serving.ImageClassifier` (pyfunc:
    class names with probabilities) and register it as a new version of
    `registered_model_name`; its input example is `sample_images[:1]`, raw uint8 pixels, what
    it takes. Plus final metrics, params and JSON documents.

    The signature describes the output only: ImageClassifier checks its input itself, with a
    message naming what it expects (MLflow's check of an input schema would answer a wrong
    shape by quoting the whole request, and cast 0-1 floats to black uint8 images first)."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from cnn_pipeline import serving

    mlflow.log_metrics(dict(metrics))
    mlflow.log_params(dict(params))
    for artifact_file, document in documents.items():
        mlflow.log_dict(document, artifact_file)
    artifacts = {
        serving.KERAS_MODEL_ARTIFACT: str(keras_file),
        serving.MODEL_INFO_ARTIFACT: str(model_info_file),
    }
    # What the served model answers for the samples: the signature's output schema.
    probabilities = model.predict(sample_images, verbose=0)
    sample_output = serving.table(probabilities, [str(name) for name in metadata["class_names"]])
    mlflow.pyfunc.log_model(
        name="model",
        python_model=serving.__file__,
        artifacts=artifacts,
        signature=infer_signature(model_output=sample_output),
        input_example=sample_images[:1],
        registered_model_name=registered_model_name,
        metadata=metadata,
        pip_requirements=pip_requirements,
    )


def describe_versions(
    run_id: str, context: TrackingContext, test_metrics: Mapping[str, float], dataset: str
) -> None:
    """Tag the registered versions of `run_id`'s model with its test metrics and dataset, and
    describe them in one sentence (the registry's Description column)."""
    import mlflow

    client = mlflow.MlflowClient(context.tracking_uri)
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    accuracy = test_metrics[RANKING_METRIC]
    for version in versions:
        for key, value in {**test_metrics, "dataset": dataset}.items():
            client.set_model_version_tag(version.name, version.version, key, str(value))
        client.update_model_version(
            version.name,
            version.version,
            description=f"Test accuracy {accuracy:.4f} on {dataset} (MLflow run {run_id}).",
        )


def promote(
    context: TrackingContext,
    registered_model_name: str,
    version: int | None = None,
    alias: str = DEFAULT_ALIAS,
) -> tuple[str, str | None]:
    """Point `alias` at `version`, or at the version with the best test accuracy. Returns the
    version and its test accuracy (None where it was never evaluated)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(context.tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{registered_model_name}'")
    except MlflowException as error:
        raise UserError(f"cannot read the registry in {context.tracking_uri}: {error}") from None
    if not versions:
        raise UserError(
            f"no version of {registered_model_name!r} in {context.tracking_uri}: "
            "run `dvc repro` first"
        )
    chosen: Any
    if version is not None:
        chosen = next((item for item in versions if int(item.version) == version), None)
        if chosen is None:
            known = ", ".join(
                str(number) for number in sorted(int(item.version) for item in versions)
            )
            raise UserError(
                f"{registered_model_name!r} has no version {version}; it has versions {known}"
            )
    else:
        evaluated = [item for item in versions if RANKING_METRIC in item.tags]
        if not evaluated:
            raise UserError(
                f"no version of {registered_model_name!r} has a test accuracy yet: run "
                "`dvc repro` (its evaluate stage tags the version), or name one with --version"
            )
        chosen = max(
            evaluated, key=lambda item: (float(item.tags[RANKING_METRIC]), int(item.version))
        )
    client.set_registered_model_alias(registered_model_name, alias, chosen.version)
    return str(chosen.version), chosen.tags.get(RANKING_METRIC)


def _rank(version: Any) -> tuple[float, int]:
    """Best test accuracy first; the newest version among equals."""
    return float(version.tags[RANKING_METRIC]), int(version.version)
