"""Benchmark the whole pipeline in a fresh copy of the repository, as a user would run it.

    python benchmarks/pipeline.py digits          # the default: `dvc repro` end to end
    python benchmarks/pipeline.py mnist-lenet5    # real MNIST (../shared) through a local mirror

Prints wall-clock seconds of `dvc repro` (TensorFlow imports included), of a no-op
`dvc repro` against DVC's own floor (`dvc status`), and the test metrics. Not a test: timings
on shared machines are noisy, so run it a few times and quote medians.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    arguments = parser.parse_args()
    overrides = [*SCENARIOS[arguments.scenario], *arguments.overrides]
    if arguments.scenario.startswith("mnist"):
        overrides.append(f"data.mirrors=['{serve(MNIST_DIR)}']")

    with tempfile.TemporaryDirectory(prefix="cnn-pipeline-benchmark-") as directory:
        repo = copy_repository(Path(directory))
        run_command(["cnn-pipeline", "params", *overrides], repo)
        repro_seconds = timed(["dvc", "repro"], repo)
        noop_seconds = [timed(["dvc", "repro"], repo) for _ in range(3)]
        floor_seconds = [timed(["dvc", "status"], repo) for _ in range(3)]
        train = json.loads((repo / "metrics/train_speed.json").read_text())
        test = json.loads((repo / "metrics/evaluate.json").read_text())

    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    print(f"scenario: {arguments.scenario} {' '.join(overrides)}")
    print(f"dvc repro, end to end: {repro_seconds:.1f} s")
    speed = train["train_images_per_second"]
    print(f"training alone: {train['train_seconds']:.1f} s ({speed:.0f} images/s)")
    print(f"no-op dvc repro: {median(noop_seconds):.2f} s (median of 3)")
    print(f"dvc status (DVC's own floor): {median(floor_seconds):.2f} s (median of 3)")
    print(f"test accuracy: {test['test_accuracy']:.4f}, test loss: {test['test_loss']:.4f}")


if __name__ == "__main__":
    main()
