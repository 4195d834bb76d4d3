"""Precision policy per GPU generation, and data-parallel training over several devices
(two CPU devices stand in for two GPUs: the same code path distributes over whatever it is
given)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnn_pipeline.accelerators import Accelerators, Gpu, precision_policy, training_devices

from conftest import command_environment

H100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0))
T4 = Gpu("Tesla T4", (7, 5))
K80 = Gpu("Tesla K80", (3, 7))


@pytest.mark.parametrize(
    ("gpus", "policy"),
    [
        ((), "float32"),
        ((H100,), "mixed_bfloat16"),
        ((H100, H100), "mixed_bfloat16"),
        ((T4,), "mixed_float16"),
        ((H100, T4), "mixed_float16"),  # the oldest GPU decides
        ((K80,), "float32"),
        ((Gpu("unknown", None),), "float32"),
    ],
)
def test_precision_policy_follows_the_oldest_gpu(gpus: tuple[Gpu, ...], policy: str) -> None:
    assert precision_policy(Accelerators("tensorflow", gpus)) == policy


def test_several_gpus_are_used_together_unless_turned_off() -> None:
    two = Accelerators("tensorflow", (H100, H100))
    assert training_devices(two, distribute=True) == ["/gpu:0", "/gpu:1"]
    assert training_devices(two, distribute=False) == []
    assert training_devices(Accelerators("jax", (H100, H100)), distribute=True) == [
        "gpu:0",
        "gpu:1",
    ]
    assert training_devices(Accelerators("tensorflow", (H100,)), distribute=True) == []
    assert training_devices(Accelerators("tensorflow", ()), distribute=True) == []


# Trains a small model through cnn_pipeline's data_parallel over two CPU devices and prints
# how many replicas computed each step.
TWO_DEVICES = """
import keras, numpy as np, sys
backend = keras.config.backend()
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    devices = ["/cpu:0", "/cpu:1"]
else:
    devices = ["cpu:0", "cpu:1"]
from cnn_pipeline.accelerators import data_parallel
with data_parallel(devices):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype("float32")
    history = model.fit(x, np.zeros((64, 2), "float32"), batch_size=16, epochs=2, verbose=0)
    if backend == "tensorflow":
        replicas = model.distribute_strategy.num_replicas_in_sync
    else:
        replicas = len(keras.distribution.distribution().device_mesh.devices.flatten())
assert history.history["loss"][1] < history.history["loss"][0], history.history
print("replicas", replicas)
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_data_parallel_training_runs_on_two_devices(backend: str) -> None:
    if backend == "jax":
        pytest.importorskip("jax", reason="the JAX backend test needs jax (a dev dependency)")
    result = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES],
        env=command_environment(
            KERAS_BACKEND=backend, XLA_FLAGS="--xla_force_host_platform_device_count=2"
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
