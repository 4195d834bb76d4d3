"""How a CNN is trained here, with nothing around it: prepared arrays and typed configs in,
the trained model and its per-epoch history out. No MLflow, no files, no working directory:
the train stage wraps it with tracking and outputs; the benchmarks and tests call it as is.

    result = train_model(train, validation, info, model_config, augment_config, train_config)
    result.model.predict(images)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from cnn_pipeline.accelerators import Accelerators, detect, precision_policy
from cnn_pipeline.config import AugmentConfig, NetworkConfig, TrainConfig
from cnn_pipeline.distribution import (
    ThisProcessOnly,
    data_parallel,
    process_count,
    process_share,
    training_devices,
)
from cnn_pipeline.models import build_model
from cnn_pipeline.prepared import DatasetInfo, Split

# Training steps that each call into the backend runs back to back before Python sees a
# batch again: the same steps in the same order (bit-identical weights here), with less
# Python between them (32 against 1: docs/benchmarks.md, "The pipeline on digits").
# Callbacks still run at every epoch's end.
STEPS_PER_EXECUTION = 32

# One row of the training history per epoch, in this order (metrics/train_history.csv).
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


@dataclass(frozen=True)
class TrainingResult:
    model: keras.Model
    history: list[dict[str, float]]  # the epochs this call trained, keys HISTORY_COLUMNS
    seconds: float  # inside fit(): training and validation, no model building


# JAX compiles every training and evaluation step with XLA; it keeps what it compiled here, so
# that the next run of the same model on the same machine skips compilation (most of a short
# GPU run). CNN_PIPELINE_JAX_CACHE moves it; an empty value turns it off.
JAX_CACHE_ENVIRONMENT_VARIABLE = "CNN_PIPELINE_JAX_CACHE"
DEFAULT_JAX_CACHE = Path.home() / ".cache" / "cnn-pipeline" / "jax"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at its folder (JAX backend only)."""
    if keras.config.backend() != "jax":
        return None
    folder = os.environ.get(JAX_CACHE_ENVIRONMENT_VARIABLE, str(DEFAULT_JAX_CACHE))
    if not folder:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)  # type: ignore[no-untyped-call]
    # Keep every compiled program, not only those over JAX's default of 1 s to compile: on
    # CPUs and small models each takes less, and together they still make most of the wait.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # type: ignore[no-untyped-call]
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)  # type: ignore[no-untyped-call]
    return Path(folder)


def configure_backend(seed: int, accelerators: Accelerators) -> None:
    """Seed Python, NumPy and the backend; pick the precision policy; on JAX, keep compiled
    programs in a persistent cache (`enable_compilation_cache`).

    On a CPU TensorFlow's kernels are also made deterministic, so that the same params and
    seed give the same metrics. On GPUs speed comes first: deterministic kernels would turn
    off XLA compilation (Keras compiles with XLA on GPUs) and pick slower convolutions.
    """
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(precision_policy(accelerators))
    enable_compilation_cache()
    if keras.config.backend() == "tensorflow" and not accelerators.gpus:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def steps_per_epoch(training_images: int, batch_size: int) -> int:
    return math.ceil(training_images / batch_size)


def learning_rate_schedule(
    config: TrainConfig, training_images: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate first rises linearly from 0 over `warmup_epochs`, then stays at
    `learning_rate` (constant) or glides from it to zero by the last step of the last epoch
    (cosine). A plain number when it never changes."""
    steps = steps_per_epoch(training_images, config.batch_size)
    total_steps = steps * config.epochs
    warmup_steps = round(config.warmup_epochs * steps)
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
    model_config: NetworkConfig,
    augment_config: AugmentConfig,
    train_config: TrainConfig,
    info: DatasetInfo,
    training_images: int,
) -> keras.Model:
    """The configured network with its normalisation and augmentation layers, compiled with
    the configured optimizer and loss. Call `configure_backend` first; build inside
    `distribution.data_parallel` to train on several devices."""
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
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


class LearningRateLogger(keras.callbacks.Callback):  # type: ignore[misc]
    """Adds the learning rate of each epoch's last step to the epoch's logs, so the history,
    the progress line and MLflow all show the schedule (warm-up, cosine decay) as it ran."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            learning_rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(learning_rate))


def train_model(
    train: Split,
    validation: Split,
    info: DatasetInfo,
    model_config: NetworkConfig,
    augment_config: AugmentConfig,
    train_config: TrainConfig,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    accelerators: Accelerators | None = None,
    verbose: int | str = 2,
) -> TrainingResult:
    """Build the configured network and fit it to `train`, validating on `validation` after
    every epoch. `callbacks` run after the learning-rate logger, so they see it in `logs`; on
    several processes they may run on one process alone (`ThisProcessOnly`).
    `accelerators`: what to train on (default: what the backend sees). On several processes
    each fits its share of the images (`process_share`), in batches of its share of
    `train_config.batch_size`."""
    accelerators = accelerators or detect()
    configure_backend(train_config.seed, accelerators)
    one_hot = keras.utils.to_categorical
    processes = process_count(accelerators.backend)
    train = process_share(train, accelerators.backend)
    validation = process_share(validation, accelerators.backend)
    if processes > 1:
        callbacks = [ThisProcessOnly(callback) for callback in callbacks]
    with data_parallel(training_devices(accelerators, train_config.distribute)):
        model = compiled_model(
            model_config, augment_config, train_config, info, len(train.labels) * processes
        )
        started = time.perf_counter()
        fit = model.fit(
            train.images,
            one_hot(train.labels, info.num_classes),
            validation_data=(validation.images, one_hot(validation.labels, info.num_classes)),
            batch_size=train_config.batch_size // processes,
            epochs=train_config.epochs,
            shuffle=True,
            callbacks=[LearningRateLogger(), *callbacks],
            verbose=verbose,
        )
        seconds = time.perf_counter() - started
    return TrainingResult(model, history_rows(fit), seconds)


def history_row(epoch: int, logs: dict[str, Any]) -> dict[str, float]:
    """The history row of the 0-based `epoch` (numbered from 1) from its logs."""
    return {"epoch": epoch + 1, **{key: float(logs[key]) for key in HISTORY_COLUMNS[1:]}}


def history_rows(fit: keras.callbacks.History) -> list[dict[str, float]]:
    """One row per epoch that `fit` ran (a resumed fit starts later than epoch 1)."""
    return [
        history_row(epoch, {key: values[index] for key, values in fit.history.items()})
        for index, epoch in enumerate(fit.epoch)
    ]
