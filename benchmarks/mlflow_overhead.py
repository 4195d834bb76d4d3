"""What MLflow logging costs the train stage: its wall-clock time with MLflow, against the
same stage with MLflow replaced by a stand-in that does nothing.

    python benchmarks/mlflow_overhead.py                # default params (digits), 3 pairs
    python benchmarks/mlflow_overhead.py --pairs 5 experiment=mnist_fast   # real MNIST

Both arms run `cnn-pipeline train` in a fresh process (TensorFlow import included), in
pairs, on data prepared once in a temporary folder (which arm goes first alternates from
pair to pair). The share is the median of the pairs' differences over the median time with
MLflow: on a shared machine whose speed drifts by tens of percent within minutes, the
difference within a pair is steadier than the difference between the arms' medians. The
same is reported for `fit` alone (per-epoch logging happens inside it) and for CPU time,
to tell, when a pair is far off, whether training or MLflow's own waits made the
difference.

The difference counts everything MLflow costs the stage: importing MLflow, opening the
store, creating the run, logging per-epoch metrics, logging and registering the model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from pipeline import serve, timed  # also puts tests/ on the path, for conftest

from cnn_pipeline import paths

from conftest import MNIST_DIR, REPO_ROOT, run_command

# Runs the train stage with every MLflow call of the tracking package replaced by a
# stand-in that accepts it and does nothing.
WITHOUT_MLFLOW = """
import sys
from cnn_pipeline import epoch_records
from cnn_pipeline.tracking import registry, runs, store
def nothing(*arguments, **keywords):
    return None
store.open_experiment = lambda *arguments: "0"
runs.start_run = lambda *arguments: "no-mlflow"
runs.continue_run = lambda run_id: True
runs.logged_steps = lambda *arguments: set()
runs.TrainingRun.end = nothing
for name in ("set_tags", "mark_killed", "log_datasets"):
    setattr(runs, name, nothing)
registry.log_and_register_model = nothing
epoch_records.MlflowEpochLogger._log = staticmethod(nothing)
from cnn_pipeline.cli import main
sys.exit(main(["train"]))
"""
WITH_MLFLOW = "import sys\nfrom cnn_pipeline.cli import main\nsys.exit(main(['train']))"


def run_stage(script: str, workdir: Path) -> tuple[float, float, float]:
    """Wall-clock seconds of one train stage; the seconds of its `fit` alone; and the CPU
    seconds of the stage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed([sys.executable, "-c", script], workdir)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fit = json.loads((workdir / paths.TRAIN_SPEED_FILE).read_text())["train_seconds"]
    return wall, fit, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def share(measure: dict[bool, list[float]]) -> str:
    """Medians with and without MLflow, the median difference within a pair, and that over
    the median with MLflow."""
    with_mlflow, without_mlflow = measure[True], measure[False]
    pairs = zip(with_mlflow, without_mlflow, strict=True)
    difference = statistics.median(
        with_value - without_value for with_value, without_value in pairs
    )
    with_median = statistics.median(with_mlflow)
    return (
        f"{with_median:.1f} s with MLflow, {statistics.median(without_mlflow):.1f} s without; "
        f"difference within a pair {difference:+.2f} s: "
        f"MLflow's share {difference / with_median:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="runs of each arm (default 3)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=mnist_fast")
    arguments = parser.parse_args()
    overrides = list(arguments.overrides)
    if any(item == "data=mnist" or item.startswith("experiment=mnist") for item in overrides):
        overrides.append(f"data.mirrors=['{serve(MNIST_DIR)}']")  # real MNIST, from ../shared
    # Seconds per run, keyed by "with MLflow".
    wall: dict[bool, list[float]] = {True: [], False: []}
    fit: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="mlflow-overhead-") as directory:
        workdir = Path(directory)
        config_dir = str(REPO_ROOT / "conf")
        run_command(
            [
                "cnn-pipeline",
                "params",
                *overrides,
                "--config-dir",
                config_dir,
                "--output",
                "params.yaml",
            ],
            workdir,
        )
        for stage in ("download", "preprocess"):
            run_command(["cnn-pipeline", stage], workdir)
        run_stage(WITH_MLFLOW, workdir)  # creates the MLflow store: a one-time cost
        for pair in range(arguments.pairs):
            for with_mlflow in (True, False) if pair % 2 == 0 else (False, True):
                measured = run_stage(WITH_MLFLOW if with_mlflow else WITHOUT_MLFLOW, workdir)
                for measure, seconds in zip((wall, fit, cpu), measured, strict=True):
                    measure[with_mlflow].append(seconds)
            print(
                f"pair {pair + 1}: "
                + "; ".join(
                    f"{name} {wall[arm][-1]:.1f} s (fit {fit[arm][-1]:.1f} s, "
                    f"CPU {cpu[arm][-1]:.1f} s)"
                    for name, arm in (("with MLflow", True), ("without", False))
                ),
                file=sys.stderr,
                flush=True,
            )
    print(f"train stage, medians of {arguments.pairs} pairs: {share(wall)}")
    print(f"its fit alone: {share(fit)}")
    print(f"its CPU time: {share(cpu)}")


if __name__ == "__main__":
    main()
