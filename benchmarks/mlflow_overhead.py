"""What MLflow logging costs the train stage: its wall-clock time with MLflow, against the
same stage with MLflow replaced by a stand-in that does nothing.

    python benchmarks/mlflow_overhead.py                # default params (digits), 3 pairs
    python benchmarks/mlflow_overhead.py --pairs 5 experiment=mnist_fast

Both arms run `cnn-pipeline train` in a fresh process (TensorFlow import included), in
turns, on data prepared once in a temporary folder; the share is (median with MLflow -
median without) / median with MLflow. The difference counts everything MLflow costs:
importing it, opening the store, creating the run, per-epoch metrics, the model's logging
and registration, and the CPU its logging thread takes from training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from pipeline import timed  # also puts tests/ on the path, for conftest

from conftest import REPO_ROOT, run_command

# Runs the train stage with `import mlflow` answered by a stand-in that accepts every call.
WITHOUT_MLFLOW = """
import sys
from unittest import mock
stand_in = mock.MagicMock()
stand_in.start_run.return_value.info.run_id = "no-mlflow"
stand_in.active_run.return_value = None
for name in ("mlflow", "mlflow.keras", "mlflow.models", "mlflow.models.signature"):
    sys.modules[name] = stand_in
from cnn_pipeline.cli import main
sys.exit(main(["train"]))
"""
WITH_MLFLOW = "import sys\nfrom cnn_pipeline.cli import main\nsys.exit(main(['train']))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="runs of each arm (default 3)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=mnist_fast")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlflow-overhead-") as directory:
        workdir = Path(directory)
        config_dir = str(REPO_ROOT / "conf")
        run_command(
            ["cnn-pipeline", "params", *arguments.overrides, "--config-dir", config_dir], workdir
        )
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
