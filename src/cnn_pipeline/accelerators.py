"""What the Keras backend trains on, and how to use it: the precision policy and, with
several GPUs, data-parallel training (each GPU takes a share of every batch, gradients are
summed across them). Backend-neutral: TensorFlow and JAX, TensorFlow imported only with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int] | None  # None where the backend does not say


@dataclass(frozen=True)
class Accelerators:
    backend: str
    gpus: tuple[Gpu, ...]

    def describe(self) -> str:
        """'GPU: <name>[, <name>...]' when the backend sees GPUs, else 'CPU'."""
        return f"GPU: {', '.join(gpu.name for gpu in self.gpus)}" if self.gpus else "CPU"


def detect() -> Accelerators:
    """The GPUs the current Keras backend can train on (CUDA_VISIBLE_DEVICES narrows them)."""
    backend = keras.config.backend()
    gpus: list[Gpu] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            gpus.append(
                Gpu(details.get("device_name", device.name), details.get("compute_capability"))
            )
    elif backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                capability = getattr(device, "compute_capability", None)
                gpus.append(Gpu(str(device.device_kind), _parse_capability(capability)))
    elif backend == "torch":
        import torch

        for index in range(torch.cuda.device_count()):
            gpus.append(
                Gpu(torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index))
            )
    return Accelerators(backend, tuple(gpus))


def _parse_capability(value: object) -> tuple[int, int] | None:
    """JAX gives the compute capability as a string such as '9.0'."""
    if value is None:
        return None
    try:
        major, minor = str(value).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def precision_policy(accelerators: Accelerators) -> str:
    """The Keras dtype policy that trains fastest without hurting accuracy.

    CPUs: float32 (half precision only slows them down). GPUs with tensor cores compute in
    half precision and keep float32 weights: bfloat16 from compute capability 8.0 (Ampere)
    on, which needs no loss scaling; float16 with Keras's automatic loss scaling on 7.x
    (Volta, Turing); float32 on older GPUs, or when the backend does not say.
    """
    capabilities = [gpu.compute_capability for gpu in accelerators.gpus]
    if not capabilities or None in capabilities:
        return "float32"
    oldest = min(capability for capability in capabilities if capability is not None)
    if oldest >= (8, 0):
        return "mixed_bfloat16"
    if oldest >= (7, 0):
        return "mixed_float16"
    return "float32"


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
