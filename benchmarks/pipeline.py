"""Benchmark the whole pipeline in a fresh copy of the repository, as a user would run it.

    python benchmarks/pipeline.py digits          # the default: `dvc repro` end to end
    python benchmarks/pipeline.py mnist-lenet5 --edits 0   # real MNIST (../shared), local mirror

Prints wall-clock seconds of `dvc repro` (TensorFlow imports included), of the edit loop
(a new `train.learning_rate` in params.yaml, then `dvc repro` until the new test metrics and
figures are written: check, train, evaluate and report), of a no-op `dvc repro` against
DVC's own floor (`dvc status`), and the test metrics. Not a test: timings
on shared machines are noisy, so run it a few times and quote medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import MNIST_DIR, base_url, copy_repository, run_command, serve_folder

SCENARIOS = {
    "digits": [],
    "mnist-lenet5": ["data=mnist", "model=lenet5", "train.epochs=15", "train.batch_size=64"],
}


def serve(directory: Path) -> str:
    """The base URL of `directory` served over HTTP for the rest of this process."""
    return base_url(serve_folder(directory))


def timed(arguments: list[str], repo: Path) -> float:
    started = time.perf_counter()
    run_command(arguments, repo)
    return time.perf_counter() - started


def edit_loop(repo: Path, learning_rates: list[float]) -> list[float]:
    """Seconds of `dvc repro` after each edit of train.learning_rate in params.yaml."""
    seconds = []
    for learning_rate in learning_rates:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["train"]["learning_rate"] = learning_rate
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        seconds.append(timed(["dvc", "repro"], repo))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    parser.add_argument(
        "--edits", type=int, default=3, help="edit-loop repetitions (default 3; 0 skips it)"
    )
    arguments = parser.parse_args()
    overrides = [*SCENARIOS[arguments.scenario], *arguments.overrides]
    if arguments.scenario.startswith("mnist"):
        overrides.append(f"data.mirrors=['{serve(MNIST_DIR)}']")

    with tempfile.TemporaryDirectory(prefix="cnn-pipeline-benchmark-") as directory:
        repo = copy_repository(Path(directory))
        run_command(["cnn-pipeline", "params", *overrides], repo)
        repro_seconds = timed(["dvc", "repro"], repo)
        learning_rates = [0.0021 + 0.0001 * index for index in range(arguments.edits)]
        edit_seconds = edit_loop(repo, learning_rates)
        noop_seconds = [timed(["dvc", "repro"], repo) for _ in range(3)]
        floor_seconds = [timed(["dvc", "status"], repo) for _ in range(3)]
        train = json.loads((repo / "metrics/train_speed.json").read_text())
        test = json.loads((repo / "metrics/evaluate.json").read_text())

    median = statistics.median
    print(f"scenario: {arguments.scenario} {' '.join(overrides)}")
    print(f"dvc repro, end to end: {repro_seconds:.1f} s")
    speed = train["train_images_per_second"]
    print(f"training alone: {train['train_seconds']:.1f} s ({speed:.0f} images/s)")
    if edit_seconds:
        edits = ", ".join(f"{value:.1f}" for value in edit_seconds)
        print(f"edit train.learning_rate, dvc repro: {median(edit_seconds):.1f} s ({edits})")
    print(f"no-op dvc repro: {median(noop_seconds):.2f} s (median of 3)")
    print(f"dvc status (DVC's own floor): {median(floor_seconds):.2f} s (median of 3)")
    print(f"test accuracy: {test['test_accuracy']:.4f}, test loss: {test['test_loss']:.4f}")


if __name__ == "__main__":
    main()
