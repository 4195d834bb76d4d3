"""What MLflow logging costs the train stage: its wall-clock time with MLflow, against the
same stage with MLflow replaced by a stand-in that does nothing.

    python benchmarks/mlflow_overhead.py                # default params (digits), 3 pairs
    python benchmarks/mlflow_overhead.py --pairs 5 experiment=mnist_fast   # real MNIST

Both arms run `cnn-pipeline train` in a fresh process (TensorFlow import included), in
pairs, on data prepared once in a temporary folder (which arm goes first alternates from
pair to pair). The share is the median of the pairs' differences over the median time with
MLflow: on a shared machine whose speed drifts by tens of percent within minutes, the
difference within a pair is steadier than the difference between the arms' medians.

The difference counts everything MLflow costs: starting its recording process, which
imports MLflow, opens the store, creates the run, logs per-epoch metrics, logs and
registers the model; the CPU that process takes from training; and the wait at the end for
the model's registration.
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
            arms = [(WITH_MLFLOW, with_mlflow), (WITHOUT_MLFLOW, without_mlflow)]
            for script, times in arms if pair % 2 == 0 else reversed(arms):
                times.append(timed([sys.executable, "-c", script], workdir))
            print(
                f"pair {pair + 1}: {with_mlflow[-1]:.1f} s with MLflow, "
                f"{without_mlflow[-1]:.1f} s without",
                file=sys.stderr,
                flush=True,
            )
    with_median = statistics.median(with_mlflow)
    pairs = zip(with_mlflow, without_mlflow, strict=True)
    difference = statistics.median(with_time - without_time for with_time, without_time in pairs)
    print(
        f"train stage: {with_median:.1f} s with MLflow, {statistics.median(without_mlflow):.1f} s "
        f"without; median difference within a pair {difference:+.2f} s (medians of "
        f"{arguments.pairs}); MLflow's share {difference / with_median:.1%}"
    )


if __name__ == "__main__":
    main()
