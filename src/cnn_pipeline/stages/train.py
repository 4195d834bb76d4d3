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

import keras
import numpy as np

from cnn_pipeline import paths
from cnn_pipeline.accelerators import (
    Accelerators,
    data_parallel,
    detect,
    precision_policy,
    training_devices,
)
from cnn_pipeline.atomic import atomic_path, write_json
from cnn_pipeline.config import AnyModelConfig, AugmentConfig, MlflowConfig, TrainConfig
from cnn_pipeline.models import build_model
from cnn_pipeline.models.receptive_field import describe, receptive_fields
from cnn_pipeline.prepared import DatasetInfo, load_info, load_split
from cnn_pipeline.tracking import BackgroundRun, LoggedKerasModel

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    history: list[dict[str, float]]  # one row per epoch, keys HISTORY_COLUMNS
    device: str
    seconds: float


def configure_backend(seed: int, accelerators: Accelerators) -> None:
    """Seed Python, NumPy and the backend; pick the precision policy.

    On a CPU TensorFlow's kernels are also made deterministic, so that the same params and
    seed give the same metrics. On GPUs speed comes first: deterministic kernels would turn
    off XLA compilation (Keras compiles with XLA on GPUs) and pick slower convolutions.
    """
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(precision_policy(accelerators))
    if keras.config.backend() == "tensorflow" and not accelerators.gpus:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def learning_rate_schedule(
    config: TrainConfig, training_images: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate first rises linearly from 0 over `warmup_epochs`, then stays at
    `learning_rate` (constant) or glides from it to zero by the last step of the last epoch
    (cosine). A plain number when it never changes."""
    steps_per_epoch = math.ceil(training_images / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if not warmup_steps and config.lr_schedule == "constant":
        return config.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else config.learning_rate,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=1.0 if config.lr_schedule == "constant" else 0.0,  # 1.0: no decay at all
        warmup_target=config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(config: TrainConfig, training_images: int) -> keras.optimizers.Optimizer:
    """The configured optimizer, stepping along `learning_rate_schedule`."""
    learning_rate = learning_rate_schedule(config, training_images)
    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    optimizer: keras.optimizers.Optimizer = optimizers[config.optimizer](
        learning_rate=learning_rate
    )
    return optimizer


def compiled_model(
    model_config: AnyModelConfig,
    augment_config: AugmentConfig,
    train_config: TrainConfig,
    info: DatasetInfo,
    training_images: int,
) -> keras.Model:
    """The configured network with its normalisation and augmentation layers, compiled with
    the configured optimizer and loss. Call `configure_backend` first; build inside
    `accelerators.data_parallel` to train on several devices."""
    model = build_model(
        model_config,
        info.image_shape,
        info.num_classes,
        augment_config,
        (info.channel_mean, info.channel_variance),
    )
    model.compile(
        optimizer=make_optimizer(train_config, training_images),
        loss=train_config.loss,
        metrics=["accuracy"],
    )
    return model


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
    """Hands every epoch's metrics to the recording process, as one call (step = epoch)."""

    def __init__(self, tracked: BackgroundRun) -> None:
        super().__init__()
        self.tracked = tracked

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.tracked.raise_if_failed()  # a broken store stops training here, not at the end
        self.tracked.log_metrics(logs or {}, step=epoch + 1)


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
    tracked: BackgroundRun,
    workdir: Path,
) -> TrainResult:
    """Train on workdir/data/prepared and write the model and its records under workdir;
    record the run in `tracked` and end it (`tracking.training_run` starts it, best before
    TensorFlow is imported: MLflow's start-up then overlaps with that import)."""
    info: DatasetInfo = load_info(workdir / paths.PREPARED_DIR)
    train = load_split(workdir / paths.PREPARED_DIR, "train")
    validation = load_split(workdir / paths.PREPARED_DIR, "validation")

    accelerators = detect()
    device = accelerators.describe()
    configure_backend(train_config.seed, accelerators)
    model_info = {
        "dataset": info.name,
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
    }

    tracked.set_tags({"device": device, "keras_backend": keras.config.backend()})
    # Leaving this block waits for MLflow to have recorded everything, and ends the run.
    with tracked, data_parallel(training_devices(accelerators, train_config.distribute)):
        model = compiled_model(model_config, augment_config, train_config, info, len(train.labels))
        model.summary(print_fn=logger.info)
        fields = receptive_fields(model)
        fields_document = {"layers": [asdict(row) for row in fields]}
        logger.info(
            "receptive fields, in pixels of the input image:\n%s",
            describe(fields, info.image_shape[0]),
        )
        parameter_count = model.count_params()
        tracked.log_params({"model.parameter_count": str(parameter_count)})
        tracked.log_dict(fields_document, "receptive_fields.json")
        tracked.log_dict(model_info, "model_info.json")

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
                    MlflowEpochLogger(tracked),
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
        tracked.log_metrics(
            {"train_seconds": seconds, "train_images_per_second": images_per_second}
        )
        sample = train.images[:4].astype(np.float32)
        probabilities = model.predict(sample, verbose=0)

        with atomic_path(workdir / paths.MODEL_FILE) as staged_model:
            model.save(staged_model)
        tracked.log_keras_model(
            LoggedKerasModel(
                path=workdir / paths.MODEL_FILE,
                keras_version=keras.__version__,
                keras_backend=keras.config.backend(),
                sample_inputs=sample,
                sample_outputs=probabilities,
                registered_model_name=mlflow_config.registered_model_name,
                metadata=model_info,  # class names travel with the registered model
                pip_requirements=serving_requirements(),
            )
        )
    run_id, experiment = tracked.ids

    final = history[-1]
    write_json(
        {
            **{key: final[key] for key in HISTORY_COLUMNS[1:]},
            "epochs": len(history),
            "device": device,
        },
        workdir / paths.TRAIN_METRICS_FILE,
    )
    write_json(
        {
            "train_seconds": round(seconds, 2),
            "train_images_per_second": round(images_per_second, 1),
        },
        workdir / paths.TRAIN_SPEED_FILE,
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
