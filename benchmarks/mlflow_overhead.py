"""What MLflow logging costs the train stage: its wall-clock time with MLflow, against the
same stage with MLflow replaced by a stand-in that does nothing.

    python benchmarks/mlflow_overhead.py                # default params (digits), 3 pairs
    python benchmarks/mlflow_overhead.py --pairs 5 experiment=mnist_fast   # real MNIST

Both arms run `cnn-pipeline train` in a fresh process (TensorFlow import included), in
turns, on data prepared once in a temporary folder; the share is (median with MLflow -
median without) / median with MLflow. The difference counts everything MLflow costs:
starting its recording process, which imports MLflow and Keras, opens the store, creates
the run, logs per-epoch metrics, logs and registers the model; the CPU that process takes
from training; and the wait at the end for the model's registration.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from pipeline import serve, timed  # also puts tests/ on the path, for conftest

from conftest import MNIST_DIR, REPO_ROOT, run_command

# Runs the train stage with its MLflow run (and so the recording process) replaced by a
# stand-in that accepts every call and does nothing.
WITHOUT_MLFLOW = """
import sys
from unittest import mock
from cnn_pipeline import tracking
stand_in = mock.MagicMock()
stand_in.ids = ("no-mlflow", "0")
stand_in.__enter__.return_value = stand_in
stand_in.__exit__.return_value = False  # let errors through
tracking.training_run = lambda *arguments: stand_in
from cnn_pipeline.cli import main
sys.exit(main(["train"]))
"""
WITH_MLFLOW = "import sys\nfrom cnn_pipeline.cli import main\nsys.exit(main(['train']))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="runs of each arm (default 3)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=mnist_fast")
    arguments = parser.parse_args()
    overrides = list(arguments.overrides)
    if any(item == "data=mnist" or item.startswith("experiment=mnist") for item in overrides):
        overrides.append(f"data.mirrors=['{serve(MNIST_DIR)}']")  # real MNIST, from ../shared
    with tempfile.TemporaryDirectory(prefix="mlflow-overhead-") as directory:
        workdir = Path(directory)
        config_dir = str(REPO_ROOT / "conf")
        run_command(["cnn-pipeline", "params", *overrides, "--config-dir", config_dir], workdir)
        for stage in ("download", "preprocess"):
            run_command(["cnn-pipeline", stage], workdir)
        timed(
            [sys.executable, "-c", WITH_MLFLOW], workdir
        )  # creates the MLflow store: a one-time cost
        with_mlflow, without_mlflow = [], []
        for pair in range(arguments.pairs):
            with_mlflow.append(timed([sys.executable, "-c", WITH_MLFLOW], workdir))
            without_mlflow.append(timed([sys.executable, "-c", WITHOUT_MLFLOW], workdir))
            print(
                f"pair {pair + 1}: {with_mlflow[-1]:.1f} s with MLflow, "
                f"{without_mlflow[-1]:.1f} s without",
                file=sys.stderr,
                flush=True,
            )
    with_median = statistics.median(with_mlflow)
    without_median = statistics.median(without_mlflow)
    share = (with_median - without_median) / with_median
    print(
        f"train stage: {with_median:.1f} s with MLflow, {without_median:.1f} s without "
        f"(medians of {arguments.pairs}); MLflow's share {share:.1%}"
    )


if __name__ == "__main__":
    main()
