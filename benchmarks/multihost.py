"""One training on two processes against one process, on this machine's CPU: the digits
default (same params and seed) trained by `cnn-pipeline train` with KERAS_BACKEND=jax, alone
and as two processes on 127.0.0.1, each followed by `cnn-pipeline evaluate`. Then three
processes are expected and two started (train.batch_size=48, which splits in three, and
CNN_PIPELINE_PEER_TIMEOUT=60 unless set): how long until both stop, and what they print.
Prints one JSON line per measurement.

    python benchmarks/multihost.py                 # 40 epochs, as params.yaml says
    python benchmarks/multihost.py train.epochs=5  # any `cnn-pipeline params` overrides
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(**extra: str) -> dict[str, str]:
    variables = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    variables["PATH"] = f"{BIN_DIR}{os.pathsep}{variables['PATH']}"
    return {**variables, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def prepared_folder(parent: Path, overrides: list[str]) -> Path:
    workdir = parent / "work"
    workdir.mkdir()
    conf = str(REPO_ROOT / "conf")
    for command in (["params", *overrides, "--config-dir", conf], ["download"], ["preprocess"]):
        subprocess.run(["cnn-pipeline", *command], cwd=workdir, env=environment(), check=True)
    return workdir


def train(workdir: Path, processes: int, started: int | None = None) -> dict[str, object]:
    """`cnn-pipeline train` as `processes` processes (only `started` of them started), then
    evaluate; wall time of the slowest process, speed and accuracy from process 0's files."""
    address = f"127.0.0.1:{free_port()}"
    several = (
        {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": str(processes)}
        if processes > 1
        else {}
    )
    begun = time.perf_counter()
    children = [
        subprocess.Popen(
            ["cnn-pipeline", "train"],
            cwd=workdir,
            env=environment(**several, **({"JAX_PROCESS_ID": str(index)} if several else {})),
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(processes if started is None else started)
    ]
    outputs = [child.communicate()[1] for child in children]
    seconds = round(time.perf_counter() - begun, 1)
    codes = [child.returncode for child in children]
    if started is not None:
        last_lines = [output.strip().splitlines()[-1] for output in outputs]
        return {"processes": processes, "started": started, "seconds_until_all_stopped": seconds,
                "exit_codes": codes, "last_lines": last_lines}  # fmt: skip
    if any(codes):
        raise SystemExit(f"training failed: {codes}\n{outputs[0][-3000:]}")
    subprocess.run(["cnn-pipeline", "evaluate"], cwd=workdir, env=environment(), check=True,
                   capture_output=True)  # fmt: skip
    speed = json.loads((workdir / "metrics/train_speed.json").read_text())
    evaluation = json.loads((workdir / "metrics/evaluate.json").read_text())
    recorded = json.loads((workdir / "metrics/train.json").read_text())
    return {
        "processes": processes,
        "wall_seconds": seconds,
        **speed,
        "test_accuracy": evaluation["test_accuracy"],
        "recorded": {key: recorded[key] for key in ("process_count", "device_count")},
    }


def main() -> None:
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as temporary:
        workdir = prepared_folder(Path(temporary), overrides)
        for processes in (1, 2):
            print(json.dumps(train(workdir, processes)), flush=True)
        # Three processes need a batch that splits in three; the wait is shortened to 60 s.
        subprocess.run(["cnn-pipeline", "params", *overrides, "train.batch_size=48",
                        "--config-dir", str(REPO_ROOT / "conf")], cwd=workdir,
                       env=environment(), check=True, capture_output=True)  # fmt: skip
        os.environ.setdefault("CNN_PIPELINE_PEER_TIMEOUT", "60")
        timeout = os.environ["CNN_PIPELINE_PEER_TIMEOUT"]
        print(json.dumps({"peer_timeout": timeout, **train(workdir, 3, started=2)}), flush=True)


if __name__ == "__main__":
    main()
