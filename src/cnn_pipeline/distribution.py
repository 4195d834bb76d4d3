"""How one training spreads over several devices of one machine: each GPU takes a share of
every batch and the gradients are summed across them (TensorFlow's MirroredStrategy, Keras's
DataParallel distribution on JAX). `train.distribute` in params.yaml turns it on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cnn_pipeline.accelerators import Accelerators


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
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices).scope():
            yield
    elif backend == "jax":
        import jax

        by_name = {_jax_name(device): device for device in jax.devices()}
        distribution = keras.distribution.DataParallel(devices=[by_name[name] for name in devices])
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(distribution)
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise NotImplementedError(f"data-parallel training is not supported on {backend}")


def _jax_name(device: object) -> str:
    return f"{device.platform}:{device.id}"  # type: ignore[attr-defined]


def training_devices(accelerators: Accelerators, distribute: bool) -> list[str]:
    """Device names to train on in parallel: every visible GPU when `distribute` is on and
    there are several; otherwise none (the backend's default device)."""
    if not distribute or len(accelerators.gpus) < 2 or accelerators.backend == "torch":
        return []
    if accelerators.backend == "tensorflow":
        return [f"/gpu:{index}" for index in range(len(accelerators.gpus))]
    return [f"gpu:{index}" for index in range(len(accelerators.gpus))]
