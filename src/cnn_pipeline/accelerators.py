"""What the Keras backend trains on, and how to use it: which backend (`default_backend`),
the GPUs it sees against the machine's NVIDIA driver (`detect`, `check_device`), what a run
records about them (`describe_run`) and the precision policy; distribution.py spreads a
training over several of them. Backend-neutral: TensorFlow and JAX, TensorFlow imported only
with it. Keras itself is imported inside the functions that need it: `default_backend` runs
before Keras is imported, since Keras reads KERAS_BACKEND once, on import.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from cnn_pipeline.errors import UserError

logger = logging.getLogger(__name__)

DeviceSetting = Literal["auto", "cpu", "gpu"]  # params.yaml's train.device

GPU_INSTALL_COMMAND = "make pipeline GPU=1"  # installs the `gpu` extra, then runs `dvc repro`
JAX_CUDA_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin")  # what the `gpu` extra installs
# NVIDIA's driver writes its version here once its kernel module is loaded, also in containers
# that lack nvidia-smi.
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int] | None  # None where the backend does not say


@dataclass(frozen=True)
class NvidiaDriver:
    version: str  # e.g. "550.54.15"
    gpus: tuple[str, ...]  # GPU names as nvidia-smi lists them; empty when read from /proc


@dataclass(frozen=True)
class Accelerators:
    backend: str
    gpus: tuple[Gpu, ...]  # the GPUs the backend trains on
    driver: NvidiaDriver | None = None  # the machine's NVIDIA driver, used by the backend or not
    cuda_version: str | None = None  # the CUDA the backend runs on, where it sees GPUs

    def describe(self) -> str:
        """'GPU: <name>[, <name>...]' when the backend sees GPUs, else 'CPU'."""
        return f"GPU: {', '.join(gpu.name for gpu in self.gpus)}" if self.gpus else "CPU"


def jax_cuda_installed() -> bool:
    """Whether JAX's CUDA plugin is installed: the `gpu` extra, `make pipeline GPU=1`."""
    for plugin in JAX_CUDA_PLUGINS:
        try:
            version(plugin)
        except PackageNotFoundError:
            continue
        return True
    return False


def pinned_versions(packages: Iterable[str]) -> list[str]:
    """'keras==3.15.1' for each installed package, the bare name for one that is not."""
    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pinned.append(package)
    return pinned


# Keras's numpy backend predicts up to this many pixel values (images x height x width x
# channels) where a stage only predicts: it starts in half TensorFlow's time, whose faster
# convolutions win on more, such as ResNet-20 over CIFAR-10's test set (docs/benchmarks.md,
# "Backends and compilation"). Digits' test set is 23k values; MNIST's, 7.8M.
NUMPY_BACKEND_MAX_VALUES = 1_000_000


def default_backend(predicted_values: int | None = None) -> str:
    """The Keras backend `cnn-pipeline` uses where KERAS_BACKEND is not set: JAX where the GPU
    install put JAX's CUDA plugin (docs/speed.md, "GPUs": JAX is the backend measured on
    GPUs), TensorFlow otherwise (Keras's own default), and Keras's numpy backend for a stage
    that only runs a trained model over `predicted_values` of at most
    NUMPY_BACKEND_MAX_VALUES (a `.keras` file loads in any backend; the predictions agree with
    TensorFlow's within 1e-6)."""
    if jax_cuda_installed():
        return "jax"
    if predicted_values is not None and predicted_values <= NUMPY_BACKEND_MAX_VALUES:
        return "numpy"
    return "tensorflow"


def nvidia_driver(driver_file: Path = NVIDIA_DRIVER_FILE) -> NvidiaDriver | None:
    """The machine's NVIDIA driver, whatever the backend sees: `nvidia-smi` on PATH (GPU
    names and driver version), else the driver's own `driver_file`; None without either.
    An nvidia-smi that cannot reach a driver does not count."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is not None:
        try:
            listing = subprocess.run(
                [nvidia_smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        rows = [[cell.strip() for cell in line.rsplit(",", 1)] for line in listing.splitlines()]
        rows = [row for row in rows if len(row) == 2 and all(row)]
        if rows:
            return NvidiaDriver(rows[0][1], tuple(name for name, _ in rows))
    try:
        text = driver_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..." (or "Open Kernel
    # Module for x86_64  550.54.15").
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return NvidiaDriver(match.group(1) if match else "unknown", ())


def _hide_gpus(backend: str) -> None:
    """Keep every GPU from the backend; before it initialises its devices."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")  # raises if TensorFlow already started
    elif backend == "jax":
        import jax

        jax.config.update("jax_platforms", "cpu")  # type: ignore[no-untyped-call]
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # read when CUDA initialises


def _cuda_version(backend: str) -> str | None:
    """The CUDA version the backend runs GPUs with: the one TensorFlow or PyTorch was built
    with, the CUDA runtime wheel JAX's plugin loads."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.sysconfig.get_build_info().get("cuda_version")  # type: ignore[no-any-return]
    if backend == "torch":
        import torch

        return torch.version.cuda  # type: ignore[no-any-return]
    for runtime in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime"):
        try:
            return version(runtime)
        except PackageNotFoundError:
            continue
    return None


def detect(setting: DeviceSetting = "auto") -> Accelerators:
    """The GPUs the current Keras backend can train on (CUDA_VISIBLE_DEVICES narrows them),
    and the machine's NVIDIA driver. `setting="cpu"` (train.device) first hides every GPU
    from the backend: call this before anything else touches the backend's devices."""
    import keras

    backend = keras.config.backend()
    if setting == "cpu":
        _hide_gpus(backend)
    gpus: list[Gpu] = []
    driver = nvidia_driver()
    # Without an NVIDIA driver TensorFlow has no GPU to find, and looking prints a CUDA error.
    if backend == "tensorflow" and driver is not None:
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
    cuda_version = _cuda_version(backend) if gpus else None
    return Accelerators(backend, tuple(gpus), driver, cuda_version)


def _driver_gpus(driver: NvidiaDriver) -> str:
    """'an NVIDIA GPU (NVIDIA H100 80GB HBM3, driver 550.54.15)', '2 NVIDIA GPUs (...)'."""
    count = len(driver.gpus)
    names = ", ".join(sorted(set(driver.gpus)))
    what = f"{count} NVIDIA GPUs" if count > 1 else "an NVIDIA GPU"
    return f"{what} ({names + ', ' if names else ''}driver {driver.version})"


def _gpu_fix(backend: str) -> str:
    """What makes the backend see the machine's GPU."""
    if jax_cuda_installed():
        if backend != "jax":
            return f"the GPU install trains with JAX: unset KERAS_BACKEND (now {backend})"
        return (
            "JAX's CUDA plugin is installed but could not use the GPU: its warning above says "
            "why (often a driver too old for CUDA 12: update it)"
        )
    return f"install the GPU build with `{GPU_INSTALL_COMMAND}`"


def check_device(setting: DeviceSetting, accelerators: Accelerators) -> None:
    """Stop, or say in one line, when `train.device` and the GPUs seen disagree.

    `gpu` without a GPU the backend sees: UserError. `auto` on a machine whose NVIDIA driver
    shows a GPU the backend does not see: one warning naming the fix, then CPU training.
    """
    if accelerators.gpus or setting == "cpu":
        return
    backend = BACKEND_NAMES.get(accelerators.backend, accelerators.backend)
    driver = accelerators.driver
    if setting == "gpu":
        if driver is None:
            raise UserError(
                f"params.yaml: train.device = gpu, but this machine has no NVIDIA GPU "
                f"(nvidia-smi is not on PATH, {NVIDIA_DRIVER_FILE} is absent): run on a GPU "
                "machine, or set train.device to auto or cpu"
            )
        raise UserError(
            f"params.yaml: train.device = gpu, but {backend} sees none of this machine's "
            f"{_driver_gpus(driver)}: {_gpu_fix(accelerators.backend)}; or set train.device "
            "to auto or cpu"
        )
    if driver is not None:
        logger.warning(
            "this machine has %s but %s sees none, so training runs on the CPU: %s "
            "(train.device=cpu silences this)",
            _driver_gpus(driver),
            backend,
            _gpu_fix(accelerators.backend),
        )


def describe_run(accelerators: Accelerators) -> dict[str, str]:
    """What a run trained on, for its MLflow tags and metrics/train.json: backend, precision
    policy, GPU model and count, NVIDIA driver and CUDA versions ("none" where absent)."""
    driver = accelerators.driver
    return {
        "keras_backend": accelerators.backend,
        "precision_policy": precision_policy(accelerators),
        "gpu_count": str(len(accelerators.gpus)),
        "gpu_model": ", ".join(sorted({gpu.name for gpu in accelerators.gpus})) or "none",
        "gpu_driver_version": driver.version if driver is not None else "none",
        "cuda_version": accelerators.cuda_version or "none",
    }


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
