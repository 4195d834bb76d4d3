"""Time to 99% MNIST test accuracy: keras-io's "Simple MNIST convnet" against this project.

    python benchmarks/time_to_accuracy.py                     # both arms, stop each at 99.0%
    python benchmarks/time_to_accuracy.py --epochs 15         # fixed epochs, no early stop
    KERAS_BACKEND=jax python benchmarks/time_to_accuracy.py   # another Keras backend
    python benchmarks/time_to_accuracy.py --throughput        # images/s at batch 128-2048 (GPU)
    python benchmarks/time_to_accuracy.py --arm project --preset mnist_best --no-stop
    python benchmarks/time_to_accuracy.py --arm project --no-stop train.seed=1  # + overrides

Arm (a) is the keras-io example as published: its layout, pixels scaled to [0, 1], batch 128,
Adam at 0.001, 10% of the training images held out, 15 epochs. Arm (b) is this project's
`experiment=mnist_fast` preset, built and compiled by the project's own training code on the
project's prepared split. Both are evaluated on the 10,000 test images after every epoch;
only time spent in fit() counts as training time (imports, data loading and the per-epoch
test evaluation are reported apart). Each arm runs in its own process, so peak memory is
its own. Real MNIST is read from ../shared/datasets/mnist, or from $CNN_PIPELINE_MNIST_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from conftest import MNIST_DIR, MNIST_DIR_VARIABLE  # noqa: E402  (one place for the folder)

TARGET = 0.99


def _load_mnist() -> tuple[Any, Any, Any, Any]:
    from cnn_pipeline.datasets import idx
    from cnn_pipeline.datasets.mnist import MNIST

    raw = idx.read(MNIST, MNIST_DIR)
    return raw.images, raw.labels, raw.test_images, raw.test_labels


def _keras_io_model() -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )


def _arm_keras_io(epochs: int, stop_at_target: bool) -> dict[str, Any]:
    import keras

    started = time.perf_counter()
    images, labels, test_images, test_labels = _load_mnist()
    x = images.astype("float32") / 255
    x_test = test_images.astype("float32") / 255
    y = keras.utils.to_categorical(labels, 10)
    load_seconds = time.perf_counter() - started
    model = _keras_io_model()
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    probe = _test_every_epoch(x_test, test_labels, stop_at_target)
    # As published: batches of 128, 10% of the training images held out for validation.
    model.fit(
        x, y, batch_size=128, epochs=epochs, validation_split=0.1, callbacks=[probe], verbose=0
    )
    return _summary(model, probe, round(len(x) * 0.9), load_seconds)


def _arm_project(
    preset: str, overrides: list[str], epochs: int | None, stop_at_target: bool
) -> dict[str, Any]:
    """The project's preset, trained by the project's own training core."""
    import yaml

    from cnn_pipeline import config
    from cnn_pipeline.compose import compose_params
    from cnn_pipeline.datasets import RawDataset
    from cnn_pipeline.prepared import DatasetInfo
    from cnn_pipeline.stages.preprocess import channel_statistics, split_dataset
    from cnn_pipeline.training import train_model

    params = yaml.safe_load(
        compose_params(REPO_ROOT / "conf", [f"experiment={preset}", *overrides])
    )
    train_config = config.train_config(params)
    if epochs is not None:
        train_config = train_config.model_copy(update={"epochs": epochs})
    started = time.perf_counter()
    images, labels, test_images, test_labels = _load_mnist()
    raw = RawDataset(images, labels, tuple("0123456789"), test_images, test_labels)
    splits = split_dataset(raw, config.data_config(params))
    train, validation = splits["train"], splits["validation"]
    mean, variance = channel_statistics(train.images)
    info = DatasetInfo("mnist", raw.class_names, (28, 28, 1), mean, variance)
    load_seconds = time.perf_counter() - started
    probe = _test_every_epoch(test_images, test_labels, stop_at_target)
    result = train_model(
        train,
        validation,
        info,
        config.model_config(params),
        config.augment_config(params),
        train_config,
        callbacks=[probe],
        verbose=0,
    )
    return _summary(result.model, probe, len(train.labels), load_seconds)


def _test_every_epoch(x_test: Any, y_test: Any, stop_at_target: bool) -> Any:
    """A callback that tests the model on the test images after every epoch, timing training
    (inside fit, without this test) apart from testing."""
    import keras

    class TestEveryEpoch(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, float]] = []
            self.training_seconds = 0.0
            self.evaluation_seconds = 0.0
            self.epoch_started = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.training_seconds += time.perf_counter() - self.epoch_started
            started = time.perf_counter()
            predicted = self.model.predict(x_test, batch_size=1024, verbose=0).argmax(axis=1)
            self.evaluation_seconds += time.perf_counter() - started
            accuracy = float((predicted == y_test).mean())
            self.rows.append(
                {"epoch": epoch + 1, "seconds": self.training_seconds, "test_accuracy": accuracy}
            )
            print(
                f"  epoch {epoch + 1}: test accuracy {accuracy:.4f} after "
                f"{self.training_seconds:.1f} s of training",
                file=sys.stderr,
                flush=True,
            )
            if stop_at_target and accuracy >= TARGET:
                self.model.stop_training = True

    return TestEveryEpoch()


def _summary(model: Any, probe: Any, training_images: int, load_seconds: float) -> dict[str, Any]:
    import keras

    reached = next((row for row in probe.rows if row["test_accuracy"] >= TARGET), None)
    return {
        "backend": keras.config.backend(),
        "parameters": model.count_params(),
        "epochs_run": len(probe.rows),
        "seconds_to_target": reached["seconds"] if reached else None,
        "epoch_of_target": reached["epoch"] if reached else None,
        "final_test_accuracy": probe.rows[-1]["test_accuracy"],
        "training_seconds": probe.training_seconds,
        "images_per_second": training_images * len(probe.rows) / probe.training_seconds,
        "test_evaluation_seconds": probe.evaluation_seconds,
        "data_loading_seconds": load_seconds,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _throughput() -> None:
    """Training images per second for the MNIST and the 32x32x3 models, batch 128 to 2048,
    in float32 and in the precision policy the training code picks for this machine."""
    import keras
    import numpy as np
    import yaml

    from cnn_pipeline import accelerators, config
    from cnn_pipeline.compose import compose_params
    from cnn_pipeline.models import build_model

    found = accelerators.detect()
    policies = dict.fromkeys(["float32", accelerators.precision_policy(found)])
    for preset, shape in (
        ("experiment=mnist_fast", (28, 28, 1)),
        ("experiment=cifar10_resnet", (32, 32, 3)),
    ):
        params = yaml.safe_load(compose_params(REPO_ROOT / "conf", [preset]))
        for policy in policies:
            keras.config.set_dtype_policy(policy)
            for batch_size in (128, 256, 512, 1024, 2048):
                model = build_model(config.model_config(params), shape, 10)
                model.compile(optimizer="adam", loss="categorical_crossentropy")
                x = np.random.default_rng(0).integers(0, 256, (batch_size * 20, *shape), np.uint8)
                y = keras.utils.to_categorical(np.arange(len(x)) % 10, 10)
                warm_up = slice(0, batch_size * 2)
                model.fit(x[warm_up], y[warm_up], batch_size=batch_size, verbose=0)  # compiles
                started = time.perf_counter()
                model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
                rate = len(x) / (time.perf_counter() - started)
                print(
                    f"{preset} {shape} {policy} batch {batch_size}: {rate:,.0f} images/s "
                    f"({found.describe()}, {keras.config.backend()})",
                    flush=True,
                )


def _run_arm_in_child(
    arm: str, preset: str, overrides: list[str], epochs: int | None, stop: bool
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--arm", arm, "--preset", preset, *overrides]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if not stop:
        command.append("--no-stop")
    output = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    sys.stderr.write(output.stderr[-4000:])
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs per arm (default: as published)")
    parser.add_argument("--no-stop", action="store_true", help="train on after reaching 99%%")
    parser.add_argument(
        "--preset",
        default="mnist_fast",
        help="arm (b)'s conf/experiment/ preset (default: %(default)s)",
    )
    parser.add_argument(
        "--arm",
        choices=("keras-io", "project"),
        help="run one arm alone and print its figures as JSON",
    )
    parser.add_argument("--throughput", action="store_true", help="images/s per batch size")
    parser.add_argument(
        "overrides", nargs="*", help="arm (b)'s overrides of the preset, e.g. train.epochs=30"
    )
    arguments = parser.parse_args()
    if arguments.throughput:
        _throughput()
        return
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        parser.exit(2, f"real MNIST not found in {MNIST_DIR}: set {MNIST_DIR_VARIABLE}\n")
    stop = not arguments.no_stop
    if arguments.arm == "keras-io":
        print(json.dumps(_arm_keras_io(arguments.epochs or 15, stop)))
        return
    if arguments.arm == "project":
        print(
            json.dumps(_arm_project(arguments.preset, arguments.overrides, arguments.epochs, stop))
        )
        return
    print("arm (a): keras-io Simple MNIST convnet", file=sys.stderr)
    keras_io = _run_arm_in_child("keras-io", arguments.preset, [], arguments.epochs, stop)
    print(f"arm (b): project preset experiment={arguments.preset}", file=sys.stderr)
    project = _run_arm_in_child(
        "project", arguments.preset, arguments.overrides, arguments.epochs, stop
    )
    for name, result in (("(a) keras-io", keras_io), (f"(b) {arguments.preset}", project)):
        print(
            f"{name}: "
            + ", ".join(
                f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                for key, value in result.items()
            )
        )
    if keras_io["seconds_to_target"] and project["seconds_to_target"]:
        ratio = keras_io["seconds_to_target"] / project["seconds_to_target"]
        print(f"time to {TARGET:.1%}: (a)/(b) = {ratio:.2f}")
    else:
        print(f"an arm did not reach {TARGET:.1%}: no ratio")


if __name__ == "__main__":
    main()
