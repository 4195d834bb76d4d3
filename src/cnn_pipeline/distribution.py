"""How one training spreads over several devices: each GPU takes a share of every batch and
the gradients are summed across them (TensorFlow's MirroredStrategy, Keras's DataParallel
distribution on JAX). `train.distribute` in params.yaml turns it on for the GPUs of one
machine. On several processes (multihost.py starts JAX's distributed runtime), every device
of every process trains, and each process feeds its own share of every batch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from cnn_pipeline.accelerators import Accelerators
from cnn_pipeline.prepared import Split


@contextlib.contextmanager
def data_parallel(devices: list[str]) -> Iterator[None]:
    """Build and compile the model inside this to train it on all `devices` at once.

    With fewer than two devices nothing changes. TensorFlow: a MirroredStrategy (the model
    remembers it, so fit() distributes too). JAX: Keras's DataParallel distribution.
    `batch_size` stays the global batch: each of n devices computes 1/n of every batch.
    """
    if len(devices) < 2:
        yield
        return
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices).scope():
            yield
    elif backend == "jax":
        import jax

        by_name = {_jax_name(device): device for device in jax.devices()}
        distribution = keras.distribution.DataParallel(
            devices=[by_name[name] for name in devices],
            # Several processes: each feeds its own share already (`process_share`).
            auto_shard_dataset=process_count(backend) < 2,
        )
        with using_distribution(distribution):
            yield
    else:
        raise NotImplementedError(f"data-parallel training is not supported on {backend}")


def _jax_name(device: object) -> str:
    return f"{device.platform}:{device.id}"  # type: ignore[attr-defined]


def training_devices(accelerators: Accelerators, distribute: bool) -> list[str]:
    """Device names to train on in parallel: every visible GPU when `distribute` is on and
    there are several; every device of every process on several processes; otherwise none
    (the backend's default device)."""
    if process_count(accelerators.backend) > 1:
        import jax

        return [_jax_name(device) for device in jax.devices()]
    if not distribute or len(accelerators.gpus) < 2 or accelerators.backend == "torch":
        return []
    if accelerators.backend == "tensorflow":
        return [f"/gpu:{index}" for index in range(len(accelerators.gpus))]
    return [f"gpu:{index}" for index in range(len(accelerators.gpus))]


def process_count(backend: str) -> int:
    """How many processes train together: JAX's distributed runtime's count, else 1."""
    if backend != "jax":
        return 1
    import jax

    return int(jax.process_count())


def process_share(split: Split, backend: str) -> Split:
    """This process's share of a split: every n-th image of n processes, from its own index.
    Every process gets as many (up to n - 1 images are left out), so that they run the same
    number of steps; a batch of B images per process makes a global batch of n * B."""
    count = process_count(backend)
    if count < 2:
        return split
    import jax

    usable = len(split.labels) - len(split.labels) % count
    index = jax.process_index()
    return Split(split.images[:usable][index::count], split.labels[:usable][index::count])


def describe_parallelism(accelerators: Accelerators, distribute: bool) -> dict[str, str]:
    """How many processes and devices a run trains on, for its MLflow tags and metrics."""
    return {
        "process_count": str(process_count(accelerators.backend)),
        "device_count": str(max(len(training_devices(accelerators, distribute)), 1)),
    }


@contextlib.contextmanager
def outside_distribution() -> Iterator[None]:
    """Run code that one process runs alone (saving a checkpoint) with no distribution set.

    Under Keras's distribution every variable created (saving a model creates a reference
    optimizer) is placed on every process's devices, a collective that all processes must
    join: one process alone would stop them all ('passed to device_put is not the same on
    each process'). Reading the replicated weights needs no other process."""
    with using_distribution(None):
        yield


@contextlib.contextmanager
def using_distribution(distribution: Any) -> Iterator[None]:
    """Keras's global distribution set to `distribution` (None: none) inside, the one before
    restored after."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


class ThisProcessOnly(keras.callbacks.Callback):  # type: ignore[misc]
    """Runs `callback`'s per-epoch and per-training hooks `outside_distribution`: a callback
    that process 0 runs and the others do not (records, checkpoints, MLflow)."""

    def __init__(self, callback: keras.callbacks.Callback) -> None:
        super().__init__()
        self.callback = callback

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        self.callback.set_params(params)

    def _forward(self, hook: str, *arguments: Any) -> None:
        with outside_distribution():
            getattr(self.callback, hook)(*arguments)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._forward("on_train_begin", logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._forward("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._forward("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._forward("on_epoch_end", epoch, logs)
