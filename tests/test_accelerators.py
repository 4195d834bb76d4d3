"""Precision policy per GPU generation, data-parallel training over several devices (two CPU
devices stand in for two GPUs: the same code path distributes over whatever it is given), and
train.device against the machine's NVIDIA driver (a fake nvidia-smi on PATH stands in for it)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnn_pipeline import accelerators
from cnn_pipeline.accelerators import (
    Accelerators,
    Gpu,
    NvidiaDriver,
    check_device,
    describe_run,
    nvidia_driver,
    precision_policy,
)
from cnn_pipeline.distribution import training_devices
from cnn_pipeline.errors import UserError
from cnn_pipeline.prepared import values_in_test_split

from conftest import BIN_DIR, REPO_ROOT, command_environment, run_command

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
from cnn_pipeline.distribution import data_parallel
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


# --- train.device, the NVIDIA driver against what the backend sees, what a run records ----

FAKE_NVIDIA_SMI = """#!/bin/sh
# Stands in for NVIDIA's nvidia-smi on a machine without a GPU: two H100s, driver 550.54.15.
echo "NVIDIA H100 80GB HBM3, 550.54.15"
echo "NVIDIA H100 80GB HBM3, 550.54.15"
"""
BROKEN_NVIDIA_SMI = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
"""
DRIVER = NvidiaDriver("550.54.15", ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"))


def fake_bin(directory: Path, script: str) -> Path:
    """A folder holding an executable `nvidia-smi` that prints `script`'s output."""
    directory.mkdir(parents=True, exist_ok=True)
    nvidia_smi = directory / "nvidia-smi"
    nvidia_smi.write_text(script)
    nvidia_smi.chmod(0o755)
    return directory


def test_driver_is_read_from_nvidia_smi_then_from_the_drivers_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = tmp_path / "no-such-file"
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path / "working", FAKE_NVIDIA_SMI)))
    assert nvidia_driver(absent) == DRIVER

    # nvidia-smi without a driver to talk to does not count; the driver's file does.
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path / "broken", BROKEN_NVIDIA_SMI)))
    assert nvidia_driver(absent) is None
    driver_file = tmp_path / "version"
    driver_file.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Thu Jan 23 22:50:36 UTC 2025\n"
    )
    assert nvidia_driver(driver_file) == NvidiaDriver("570.86.15", ())

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert nvidia_driver(absent) is None


CPU_ONLY = Accelerators("tensorflow", ())
CPU_WITH_DRIVER = Accelerators("tensorflow", (), DRIVER)
ON_GPUS = Accelerators("jax", (H100, H100), DRIVER, "12.9.79")


def test_gpu_setting_refuses_to_start_without_a_gpu_in_one_line() -> None:
    with pytest.raises(UserError) as no_driver:
        check_device("gpu", CPU_ONLY)
    message = str(no_driver.value)
    assert "train.device = gpu" in message and "no NVIDIA GPU" in message
    assert "\n" not in message

    with pytest.raises(UserError) as unseen:
        check_device("gpu", CPU_WITH_DRIVER)
    message = str(unseen.value)
    assert "TensorFlow sees none of this machine's 2 NVIDIA GPUs" in message
    assert "`make pipeline GPU=1`" in message and "\n" not in message

    check_device("gpu", ON_GPUS)  # nothing to say


def test_auto_says_in_one_line_when_a_gpu_goes_unused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cnn_pipeline"):
        check_device("auto", CPU_ONLY)  # no GPU here at all: nothing to say
        check_device("auto", ON_GPUS)
        check_device("cpu", CPU_WITH_DRIVER)  # hidden on purpose
        assert caplog.records == []
        check_device("auto", CPU_WITH_DRIVER)
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line
    assert line.startswith("this machine has 2 NVIDIA GPUs (NVIDIA H100 80GB HBM3, driver ")
    assert "TensorFlow sees none, so training runs on the CPU" in line
    assert "`make pipeline GPU=1`" in line


def test_the_fix_named_depends_on_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accelerators, "jax_cuda_installed", lambda: True)
    with pytest.raises(UserError, match="unset KERAS_BACKEND"):
        check_device("gpu", CPU_WITH_DRIVER)  # the GPU install is there, TensorFlow was forced
    with pytest.raises(UserError, match="JAX's CUDA plugin is installed but could not"):
        check_device("gpu", Accelerators("jax", (), DRIVER))
    assert accelerators.default_backend() == "jax"
    assert accelerators.default_backend(predicted_values=23_000) == "jax"
    monkeypatch.setattr(accelerators, "jax_cuda_installed", lambda: False)
    assert accelerators.default_backend() == "tensorflow"
    # Predicting a small test set, the numpy backend; a large one, TensorFlow.
    assert accelerators.default_backend(predicted_values=23_000) == "numpy"
    assert accelerators.default_backend(predicted_values=7_840_000) == "tensorflow"


def test_the_test_set_size_comes_from_dataset_json(tmp_path: Path) -> None:
    info = {"image_shape": [8, 8, 1], "counts": {"test": [36, 35], "train": [500, 500]}}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    assert values_in_test_split(tmp_path) == 71 * 8 * 8
    assert values_in_test_split(tmp_path / "not-prepared-yet") is None


def test_run_description_names_backend_precision_gpus_driver_and_cuda() -> None:
    assert describe_run(ON_GPUS) == {
        "keras_backend": "jax",
        "precision_policy": "mixed_bfloat16",
        "gpu_count": "2",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "gpu_driver_version": "550.54.15",
        "cuda_version": "12.9.79",
    }
    assert describe_run(CPU_ONLY) == {
        "keras_backend": "tensorflow",
        "precision_policy": "float32",
        "gpu_count": "0",
        "gpu_model": "none",
        "gpu_driver_version": "none",
        "cuda_version": "none",
    }


# Detects with train.device = cpu after the stage's own imports, as the train stage does, and
# prints whether GPUs were hidden from the backend.
DETECT_ON_CPU = """
import keras
from cnn_pipeline.accelerators import detect
accelerators = detect("cpu")
assert accelerators.gpus == (), accelerators
if keras.config.backend() == "jax":
    import jax
    print("hidden", jax.config.jax_platforms, [d.platform for d in jax.devices()])
else:
    import tensorflow as tf
    print("hidden", tf.config.get_visible_devices("GPU"))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_cpu_setting_hides_gpus_before_the_backend_starts(backend: str) -> None:
    """Hiding fails loudly where the backend has already initialised its devices (TensorFlow
    raises); JAX is limited to its CPU platform."""
    if backend == "jax":
        pytest.importorskip("jax", reason="the JAX backend test needs jax (a dev dependency)")
    result = subprocess.run(
        [sys.executable, "-c", DETECT_ON_CPU],
        env=command_environment(KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = "hidden cpu ['cpu']" if backend == "jax" else "hidden []"
    assert expected in result.stdout


@pytest.fixture(scope="module")
def prepared_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with digits prepared and params for a one-epoch run."""
    workdir = tmp_path_factory.mktemp("device")
    run_command(
        ["cnn-pipeline", "params", "train.epochs=1", "--config-dir", str(REPO_ROOT / "conf")],
        workdir,
    )
    for stage in ("download", "preprocess"):
        run_command(["cnn-pipeline", stage], workdir)
    return workdir


def train_pretending_a_gpu(workdir: Path, device: str) -> subprocess.CompletedProcess[str]:
    """`cnn-pipeline train` with train.device = `device`, on a machine whose (fake) nvidia-smi
    lists two H100s that the backend cannot see (CUDA_VISIBLE_DEVICES hides real ones)."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["device"] = device
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    path = f"{fake_bin(workdir / 'fake-bin', FAKE_NVIDIA_SMI)}{os.pathsep}{BIN_DIR}"
    return run_command(
        ["cnn-pipeline", "train"],
        workdir,
        check=False,
        PATH=f"{path}{os.pathsep}{os.environ['PATH']}",
        KERAS_BACKEND="jax",  # the GPU install's backend; also the quicker import
        CUDA_VISIBLE_DEVICES="",
    )


@pytest.mark.e2e
def test_train_stage_refuses_gpu_when_the_backend_sees_none(prepared_digits: Path) -> None:
    pytest.importorskip("jax", reason="the JAX backend test needs jax (a dev dependency)")
    refused = train_pretending_a_gpu(prepared_digits, "gpu")
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = [line for line in refused.stderr.splitlines() if "error" in line]
    assert line.startswith("cnn-pipeline train: error: params.yaml: train.device = gpu, but JAX")
    assert "`make pipeline GPU=1`" in line
    assert not (prepared_digits / "models/model.keras").exists()


@pytest.mark.slow  # a whole training (about 25 s here): `make test-all`
def test_train_stage_warns_when_auto_leaves_a_gpu_unused_and_records_it(
    prepared_digits: Path,
) -> None:
    pytest.importorskip("jax", reason="the JAX backend test needs jax (a dev dependency)")
    trained = train_pretending_a_gpu(prepared_digits, "auto")
    assert trained.returncode == 0, trained.stderr[-3000:]
    warnings = [line for line in trained.stderr.splitlines() if "sees none" in line]
    assert warnings == [
        "[train] this machine has 2 NVIDIA GPUs (NVIDIA H100 80GB HBM3, driver 550.54.15) but "
        "JAX sees none, so training runs on the CPU: install the GPU build with "
        "`make pipeline GPU=1` (train.device=cpu silences this)"
    ]
    assert trained.stderr.index("sees none") < trained.stderr.index("receptive fields")

    recorded = {
        "keras_backend": "jax",
        "precision_policy": "float32",
        "gpu_count": "0",
        "gpu_model": "none",
        "gpu_driver_version": "550.54.15",
        "cuda_version": "none",
    }
    metrics = json.loads((prepared_digits / "metrics/train.json").read_text())
    assert {key: metrics[key] for key in recorded} == recorded
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{prepared_digits / 'mlflow.db'}")
    run_id = json.loads((prepared_digits / "models/mlflow_run.json").read_text())["run_id"]
    tags = client.get_run(run_id).data.tags
    assert {key: tags[key] for key in recorded} == recorded
