"""Train stage: fit the configured CNN on the prepared data, log the run to MLflow.

Writes the model, one checkpoint per epoch, the per-epoch history (a DVC plot), final
training metrics, and the MLflow run id that the evaluate stage adds its test metrics to.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cnn_pipeline import paths
from cnn_pipeline.atomic import atomic_path, write_json
from cnn_pipeline.config import AnyModelConfig, AugmentConfig, MlflowConfig, TrainConfig
from cnn_pipeline.models import build_model
from cnn_pipeline.prepared import DatasetInfo, load_info, load_split
from cnn_pipeline.reports.receptive_field import describe, receptive_fields
from cnn_pipeline.tracking import TrackingContext, experiment_id, flatten_params

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    history: list[dict[str, float]]  # one row per epoch, keys HISTORY_COLUMNS
    device: str
    seconds: float


def describe_device() -> str:
    """'GPU: <name>' when the Keras backend sees a GPU, else 'CPU'."""
    backend = keras.config.backend()
    names: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [
            tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in gpus
        ]
    elif backend == "jax":
        import jax

        names = [str(device.device_kind) for device in jax.devices() if device.platform == "gpu"]
    return f"GPU: {', '.join(names)}" if names else "CPU"


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and the backend; make TensorFlow's kernels deterministic."""
    keras.utils.set_random_seed(seed)
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def make_optimizer(config: TrainConfig, training_images: int) -> keras.optimizers.Optimizer:
    """The configured optimizer; with a cosine schedule the learning rate starts at
    `config.learning_rate` and glides to zero by the last step of the last epoch."""
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_schedule == "cosine":
        steps_per_epoch = math.ceil(training_images / config.batch_size)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=steps_per_epoch * config.epochs
        )
    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    optimizer: keras.optimizers.Optimizer = optimizers[config.optimizer](
        learning_rate=learning_rate
    )
    return optimizer


BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def serving_requirements() -> list[str]:
    """What the logged model needs to be served: Keras, NumPy and the backend, pinned.

    Given explicitly, because MLflow's own inference of them loads the model again in a
    subprocess (a second TensorFlow import): 11.8 s against 0.7 s here.
    """
    from importlib.metadata import PackageNotFoundError, version

    packages = ("keras", "numpy", *BACKEND_PACKAGES.get(keras.config.backend(), ()))
    requirements = []
    for package in packages:
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


class MlflowEpochLogger(keras.callbacks.Callback):  # type: ignore[misc]
    """Logs every epoch's metrics in one `log_batch` call (one call per value costs ~11 ms)."""

    def __init__(self, client: Any, run_id: str) -> None:
        super().__init__()
        self.client = client
        self.run_id = run_id

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), timestamp, epoch + 1) for key, value in (logs or {}).items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    with atomic_path(path) as staged, staged.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def run(
    model_config: AnyModelConfig,
    augment_config: AugmentConfig,
    train_config: TrainConfig,
    mlflow_config: MlflowConfig,
    params: dict[str, Any],
    context: TrackingContext,
    workdir: Path,
) -> TrainResult:
    """Train on workdir/data/prepared and write the model and its records under workdir.

    `params` is the whole params.yaml, logged flattened as the run's parameters.
    """
    info: DatasetInfo = load_info(workdir / paths.PREPARED_DIR)
    train = load_split(workdir / paths.PREPARED_DIR, "train")
    validation = load_split(workdir / paths.PREPARED_DIR, "validation")

    make_deterministic(train_config.seed)
    device = describe_device()
    if device != "CPU":
        # Half-precision matrix maths on the GPU's tensor cores; CPUs only slow down with it.
        keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_model(
        model_config,
        info.image_shape,
        info.num_classes,
        augment_config,
        (info.channel_mean, info.channel_variance),
    )
    model.compile(
        optimizer=make_optimizer(train_config, len(train.labels)),
        loss=train_config.loss,
        metrics=["accuracy"],
    )
    model.summary(print_fn=logger.info)
    fields = receptive_fields(model)
    fields_document = {"layers": [asdict(row) for row in fields]}
    logger.info(
        "receptive fields, in pixels of the input image:\n%s", describe(fields, info.image_shape[0])
    )
    model_info = {
        "dataset": info.name,
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
    }

    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(context.tracking_uri)
    client = mlflow.MlflowClient()
    tags = {
        "dataset": info.name,
        "model": model_config.name,
        "device": device,
        "keras_backend": keras.config.backend(),
    }
    if context.baseline_commit:
        tags["mlflow.source.git.commit"] = context.baseline_commit
    if context.dvc_experiment:
        tags["dvc.experiment"] = context.dvc_experiment
    run_name = context.dvc_experiment or f"{model_config.name}-{info.name}"

    experiment = experiment_id(client, mlflow_config.experiment_name, context)
    with mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags) as mlflow_run:
        run_id = mlflow_run.info.run_id
        mlflow.log_params(flatten_params(params))
        mlflow.log_param("model.parameter_count", model.count_params())
        mlflow.log_dict(fields_document, "receptive_fields.json")
        mlflow.log_dict(model_info, "model_info.json")  # class names, input shape

        one_hot = keras.utils.to_categorical
        with atomic_path(workdir / paths.CHECKPOINT_DIR) as checkpoint_dir:
            checkpoint_dir.mkdir()
            started = time.perf_counter()
            fit = model.fit(
                train.images,
                one_hot(train.labels, info.num_classes),
                validation_data=(
                    validation.images,
                    one_hot(validation.labels, info.num_classes),
                ),
                batch_size=train_config.batch_size,
                epochs=train_config.epochs,
                shuffle=True,
                callbacks=[
                    keras.callbacks.ModelCheckpoint(
                        str(checkpoint_dir / "epoch_{epoch:03d}.keras")
                    ),
                    MlflowEpochLogger(client, run_id),
                ],
                verbose=2,
            )
            seconds = time.perf_counter() - started

        history = [
            {
                "epoch": epoch + 1,
                **{key: float(fit.history[key][epoch]) for key in HISTORY_COLUMNS[1:]},
            }
            for epoch in range(len(fit.history["loss"]))
        ]
        images_per_second = len(train.labels) * train_config.epochs / seconds
        mlflow.log_metrics({"train_seconds": seconds, "train_images_per_second": images_per_second})

        with atomic_path(workdir / paths.MODEL_FILE) as staged_model:
            model.save(staged_model)
        sample = train.images[:4].astype(np.float32)
        mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(sample, model.predict(sample, verbose=0)),
            registered_model_name=mlflow_config.registered_model_name,
            metadata=model_info,  # class names travel with the registered model
            pip_requirements=serving_requirements(),
        )

    final = history[-1]
    write_json(
        {
            **{key: final[key] for key in HISTORY_COLUMNS[1:]},
            "epochs": len(history),
            "train_seconds": round(seconds, 2),
            "train_images_per_second": round(images_per_second, 1),
            "device": device,
        },
        workdir / paths.TRAIN_METRICS_FILE,
    )
    _write_history(history, workdir / paths.HISTORY_FILE)
    write_json({"run_id": run_id, "experiment_id": experiment}, workdir / paths.RUN_FILE)
    write_json(model_info, workdir / paths.MODEL_INFO_FILE)
    write_json(fields_document, workdir / paths.RECEPTIVE_FIELDS_FILE)
    logger.info(
        "trained %s on %s in %.1f s on %s (MLflow run %s)",
        model_config.name,
        info.name,
        seconds,
        device,
        run_id,
    )
    return TrainResult(run_id=run_id, history=history, device=device, seconds=seconds)
