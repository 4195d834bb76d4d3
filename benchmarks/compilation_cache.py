"""What JAX's persistent compilation cache saves: the digits default trained for 5 epochs with
`KERAS_BACKEND=jax`, three times in fresh processes sharing one cache folder (cold, warm,
warm), then once with the cache off. Prints fit() time, the first epoch (where JAX compiles)
and the mean of the later epochs, one JSON line per run.

    python benchmarks/compilation_cache.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

ONE_RUN = """
import json, sys, time
from pathlib import Path
import yaml
from cnn_pipeline import config, datasets, models
from cnn_pipeline.compose import compose_params
from cnn_pipeline.prepared import load_info, load_split
from cnn_pipeline.stages import download, preprocess
work, conf = Path(sys.argv[1]), Path(sys.argv[2])
params = yaml.safe_load(compose_params(conf, ["train.epochs=5"]))
data = datasets.data_config(params)
if not (work / "prepared").exists():
    download.run(data, work / "raw")
    preprocess.run(data, work / "raw", work / "prepared")
import keras
from cnn_pipeline.training import train_model
ends = []
class EpochEnds(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        ends.append(time.perf_counter())
    def on_epoch_end(self, epoch, logs=None):
        ends.append(time.perf_counter())
prepared = work / "prepared"
result = train_model(
    load_split(prepared, "train"), load_split(prepared, "validation"), load_info(prepared),
    models.model_config(params), config.augment_config(params), config.train_config(params),
    callbacks=[EpochEnds()], verbose=0,
)
print(json.dumps({
    "fit_seconds": round(result.seconds, 2),
    "first_epoch_seconds": round(ends[1] - ends[0], 2),
    "later_epoch_seconds": round((ends[-1] - ends[1]) / (len(ends) - 2), 2),
}))
"""


def run(work: Path, cache: str) -> dict[str, float]:
    environment = {**os.environ, "KERAS_BACKEND": "jax", "CNN_PIPELINE_JAX_CACHE": cache}
    result = subprocess.run(
        [sys.executable, "-c", ONE_RUN, str(work), str(REPO_ROOT / "conf")],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
    return measured


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="compilation-cache-") as directory:
        work, cache = Path(directory) / "data", str(Path(directory) / "jax-cache")
        for label in ("cold cache", "warm cache", "warm cache"):
            print(json.dumps({"run": label, **run(work, cache)}), flush=True)
        print(json.dumps({"run": "cache off", **run(work, "")}), flush=True)


if __name__ == "__main__":
    main()
