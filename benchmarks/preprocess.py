"""Benchmark the preprocess stage on full-size synthetic data in each dataset's real format.

    python benchmarks/preprocess.py cifar10        # 50,000 + 10,000 32x32x3 images (binary batches)
    python benchmarks/preprocess.py image_folder   # 10,000 32x32 PNG files in 10 class folders

Prints the wall-clock seconds and peak memory (max RSS) of `cnn-pipeline preprocess` run as a
child process, as DVC runs it. Targets (issue 3): CIFAR-10 under 15 s and 1.5 GB; an image
folder of 10,000 small images under 1 GB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from cnn_pipeline.compose import compose_params  # noqa: E402
from cnn_pipeline.datasets import cifar10, image_folder  # noqa: E402

from conftest import command_environment  # noqa: E402


def write_cifar(raw_dir: Path) -> list[str]:
    batches = raw_dir / cifar10.MEMBER_DIR
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
        records = rng.integers(0, 256, (10_000, cifar10.RECORD_BYTES), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(batches / name)
    return ["data=cifar10"]


def write_image_folder(raw_dir: Path) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(10_000):
        folder = raw_dir / image_folder.TRAIN_DIR / f"class{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:06d}.png")
    return ["data=image_folder", "data.path=/unused", "data.image_size=32", "data.color_mode=rgb"]


SCENARIOS = {"cifar10": write_cifar, "image_folder": write_image_folder}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    scenario = parser.parse_args().scenario
    with tempfile.TemporaryDirectory(prefix="cnn-pipeline-preprocess-") as directory:
        workdir = Path(directory)
        overrides = SCENARIOS[scenario](workdir / "data" / "raw")
        params = compose_params(REPO_ROOT / "conf", overrides)
        (workdir / "params.yaml").write_text(params)
        started = time.perf_counter()
        subprocess.run(
            ["cnn-pipeline", "preprocess"], cwd=workdir, env=command_environment(), check=True
        )
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        counts = yaml.safe_load((workdir / "data/prepared/dataset.json").read_text())["counts"]
    print(
        f"scenario: {scenario}; images per split: "
        + ", ".join(f"{name} {sum(c)}" for name, c in counts.items())
    )
    print(f"preprocess: {seconds:.1f} s wall clock, peak memory {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
