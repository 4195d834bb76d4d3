"""Training images per second for the MNIST and the 32x32x3 presets' models, batch 128 to 2048,
in float32 and in the precision policy the training code picks for this machine (made for a
GPU; random pixels, so no data loading counts).

    KERAS_BACKEND=jax python benchmarks/throughput.py
"""

from __future__ import annotations

import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import keras
    import numpy as np
    import yaml

    from cnn_pipeline import accelerators, models
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
                model = build_model(models.model_config(params), shape, 10)
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


if __name__ == "__main__":
    main()
