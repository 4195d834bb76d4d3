"""One training on several processes (multihost.py, rendezvous.py): where each process learns
its place, the meeting before JAX starts (a missing or differing process stops every process
in one line), two real processes on 127.0.0.1 ending with the same weights, and, slow, the
train stage on two processes in two folders standing in for two hosts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnn_pipeline import multihost
from cnn_pipeline.compose import compose_params
from cnn_pipeline.errors import UserError
from cnn_pipeline.rendezvous import Member, meet
from cnn_pipeline.stages import download, preprocess

from conftest import REPO_ROOT, command_environment, data_config

pytest.importorskip("jax", reason="training on several processes needs jax (a dev dependency)")

PROCESS_0 = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def several(count: int, **extra: str) -> dict[str, str]:
    """The variables of `count` processes on 127.0.0.1 at a free port (JAX_PROCESS_ID apart)."""
    return {
        "KERAS_BACKEND": "jax",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}",
        "JAX_NUM_PROCESSES": str(count),
        "CNN_PIPELINE_JAX_CACHE": "",  # every process compiles: no cache shared between runs
        **extra,
    }


def prepare(workdir: Path, *overrides: str) -> Path:
    """A working folder with digits prepared and params.yaml composed with `overrides`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(compose_params(REPO_ROOT / "conf", list(overrides)))
    data = data_config("digits")
    download.run(data, workdir / "data/raw")
    preprocess.run(data, workdir / "data/raw", workdir / "data/prepared")
    return workdir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare(tmp_path_factory.mktemp("multihost") / "work", "train.epochs=1")


def start(arguments: list[str], workdir: Path, **variables: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        arguments,
        cwd=workdir,
        env=command_environment(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_each_process_learns_its_place_from_jax_or_slurm_variables() -> None:
    assert multihost.from_environment({"KERAS_BACKEND": "jax"}) is None
    peer = multihost.from_environment({**PROCESS_0, "JAX_PROCESS_ID": "1", "KERAS_BACKEND": "jax"})
    assert peer is not None and not peer.writes_outputs
    assert (peer.coordinator_address, peer.process_count, peer.process_id) == (
        "10.0.0.1:1234",
        2,
        1,
    )
    alone = {**PROCESS_0, "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}
    assert multihost.from_environment(alone) is None
    slurm = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": "4100"}
    slurm |= {"SLURM_STEP_NODELIST": "gpu[007-008],cpu1", "KERAS_BACKEND": "jax"}
    cluster = multihost.from_environment(slurm)
    # The port JAX itself derives from the job id: 61440 + 4100 % 4096.
    assert cluster is not None and cluster.coordinator_address == "gpu007:61444"
    assert cluster.writes_outputs
    assert multihost.from_environment({**slurm, "SLURM_NTASKS": "1"}) is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS is not"),
        ({**PROCESS_0, "JAX_PROCESS_ID": "2"}, "process id 2 is invalid for 2 processes"),
        ({**PROCESS_0, "JAX_PROCESS_ID": "one"}, "JAX_PROCESS_ID = 'one' is invalid"),
        (
            {**PROCESS_0, "JAX_PROCESS_ID": "0", "KERAS_BACKEND": "tensorflow"},
            "not KERAS_BACKEND=tensorflow .*keras-team/keras#20585.*run with KERAS_BACKEND=jax",
        ),
    ],
)
def test_incomplete_settings_and_tensorflow_are_refused(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        multihost.from_environment({"KERAS_BACKEND": "jax", **variables})


def test_a_process_whose_params_differ_stops_every_process_before_training() -> None:
    address = f"127.0.0.1:{free_port()}"
    same = {"params": "a", "data": "b"}
    errors: dict[int, str] = {}

    def join(member: Member) -> None:
        try:
            meet(member, address, timeout=20)
        except UserError as error:
            errors[member.process_id] = str(error)

    members = [Member(0, 2, "alpha", same), Member(1, 2, "beta", {**same, "params": "c"})]
    threads = [threading.Thread(target=join, args=(member,)) for member in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors[0] == errors[1]
    assert errors[0].startswith("process 1 on beta trains on other params than process 0 on alpha")


def test_data_digest_is_of_the_arrays_not_the_files(prepared: Path, tmp_path: Path) -> None:
    """Two hosts that ran the same preprocess hold equal arrays in .npz files that differ
    (np.savez stamps the time); a changed label is a difference."""
    copy = tmp_path / "prepared"
    shutil.copytree(prepared / "data/prepared", copy)
    with np.load(copy / "train.npz") as arrays:
        images, labels = arrays["images"], arrays["labels"]
    np.savez_compressed(copy / "train.npz", images=images, labels=labels)  # other bytes
    params = {"train": {"batch_size": 32}}
    original = multihost.digests(params, prepared / "data/prepared")
    assert multihost.digests(params, copy) == original
    labels[0] = (labels[0] + 1) % 10
    np.savez(copy / "train.npz", images=images, labels=labels)
    changed = multihost.digests(params, copy)
    assert [key for key in original if changed[key] != original[key]] == ["data (data/prepared)"]


def test_a_process_that_never_starts_stops_the_others_in_one_line(
    prepared: Path, tmp_path: Path
) -> None:
    """Three processes expected, two started (a batch of 48 splits in three): both stop after
    the 3 s wait, with the same line naming the missing process and the address, and neither
    writes anything. No Keras import happens before, so this takes seconds."""
    params = tmp_path / "params.yaml"
    params.write_text(compose_params(REPO_ROOT / "conf", ["train.batch_size=48"]))
    variables = several(3, CNN_PIPELINE_PEER_TIMEOUT="3")
    began = time.monotonic()
    children = [
        start(
            ["cnn-pipeline", "train", "--params", str(params)],
            prepared,
            JAX_PROCESS_ID=str(index),
            **variables,
        )
        for index in range(2)
    ]
    outputs = [child.communicate(timeout=60)[1] for child in children]
    seconds = time.monotonic() - began
    assert [child.returncode for child in children] == [2, 2], outputs
    address = variables["JAX_COORDINATOR_ADDRESS"]
    for output in outputs:
        errors = [line for line in output.splitlines() if "error" in line]
        assert errors == [
            f"cnn-pipeline train: error: process 2 of 3 did not reach the coordinator {address} "
            "within 3 s (there: process 0 on "
            f"{socket.gethostname()}, process 1 on {socket.gethostname()}): start `cnn-pipeline "
            f"train` with JAX_PROCESS_ID=2 on its host, or check that the host can reach "
            f"{address}; every process stops"
        ]
    assert seconds < 3 + 20, f"took {seconds:.1f} s"
    assert not (prepared / "models").exists() and not (prepared / "mlflow.db").exists()


def test_tensorflow_backend_refuses_several_processes_in_one_line(prepared: Path) -> None:
    variables = several(2, KERAS_BACKEND="tensorflow", JAX_PROCESS_ID="0")
    child = start(["cnn-pipeline", "train"], prepared, **variables)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr[-3000:]
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(
            "cnn-pipeline train: error: JAX_NUM_PROCESSES/JAX_PROCESS_ID ask for 2 processes, but "
            "training on several processes needs Keras's JAX backend, not KERAS_BACKEND=tensorflow"
        )
    )


# One process of the training core: join the others, train, save the final weights.
CORE = """
import json, os, sys
from pathlib import Path
import numpy as np, yaml
from cnn_pipeline import config, models, multihost
workdir, weights_file = Path(sys.argv[1]), sys.argv[2]
params = yaml.safe_load((workdir / "params.yaml").read_text())
multihost.join(multihost.from_environment(os.environ), params, workdir / "data/prepared")
from cnn_pipeline.prepared import load_info, load_split
from cnn_pipeline.training import train_model
prepared = workdir / "data/prepared"
result = train_model(
    load_split(prepared, "train"), load_split(prepared, "validation"), load_info(prepared),
    models.model_config(params), config.augment_config(params), config.train_config(params),
    verbose=0,
)
np.savez(weights_file, *result.model.get_weights())
print(json.dumps(result.history[-1]))
"""


def test_two_processes_end_with_identical_weights(prepared: Path, tmp_path: Path) -> None:
    """Two processes of the training core on 127.0.0.1, each feeding its half of every batch:
    the same weights in both, bit for bit, and the same history."""
    variables = several(2)
    children = [
        start(
            [sys.executable, "-c", CORE, str(prepared), str(tmp_path / f"{index}.npz")],
            prepared,
            JAX_PROCESS_ID=str(index),
            **variables,
        )
        for index in range(2)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs[0][1][-3000:]
    histories = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert histories[0] == histories[1]
    with np.load(tmp_path / "0.npz") as first, np.load(tmp_path / "1.npz") as second:
        assert len(first.files) > 4
        for name in first.files:
            np.testing.assert_array_equal(first[name], second[name])


def files_under(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*")}


def run_stages(workdir: Path, stages: tuple[str, ...], variables: dict[str, str]) -> float:
    """Run the stages one after the other; the test accuracy that evaluate wrote."""
    for stage in stages:
        child = start(["cnn-pipeline", stage], workdir, **variables)
        _, stderr = child.communicate(timeout=900)
        assert child.returncode == 0, stderr[-3000:]
    accuracy: float = json.loads((workdir / "metrics/evaluate.json").read_text())["test_accuracy"]
    return accuracy


@pytest.mark.slow
def test_train_stage_on_two_hosts_writes_once_and_scores_as_one_process(tmp_path: Path) -> None:
    """The train stage on two processes in two folders, as on two hosts: process 0 writes the
    model, metrics and one MLflow run recording 2 processes and 2 devices; process 1's folder is
    left as it was. Test accuracy within 2 points of one process (359 test images: 7 images):
    each process shuffles its own half, so the batches differ as they would with another seed
    (seeds 1-5 spread 97.77-99.44%, docs/benchmarks.md)."""
    epochs = "train.epochs=10"
    jax = {"KERAS_BACKEND": "jax"}
    alone = run_stages(prepare(tmp_path / "alone", epochs), ("train", "evaluate"), jax)
    host_0, host_1 = prepare(tmp_path / "host0", epochs), prepare(tmp_path / "host1", epochs)
    before = files_under(host_1)
    variables = several(2)
    children = [
        start(["cnn-pipeline", "train"], folder, JAX_PROCESS_ID=str(index), **variables)
        for index, folder in enumerate((host_0, host_1))
    ]
    outputs = [child.communicate(timeout=900)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs[0][-3000:]
    assert "process 0 writes the outputs" in outputs[1]
    assert files_under(host_1) == before
    recorded = json.loads((host_0 / "metrics/train.json").read_text())
    assert (recorded["process_count"], recorded["device_count"]) == ("2", "2")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{host_0 / 'mlflow.db'}")
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["process_count"], run.data.tags["device_count"]) == ("2", "2")
    together = run_stages(host_0, ("evaluate",), jax)
    assert abs(together - alone) <= 0.02, (together, alone)


@pytest.mark.slow
def test_a_process_killed_during_training_stops_the_other_in_one_line(tmp_path: Path) -> None:
    """kill -9 of process 1 after its first epoch: process 0 stops within seconds, with one
    line naming itself, the coordinator and the lost peer's address; its MLflow run FAILED."""
    workdir = prepare(tmp_path / "work", "train.epochs=200")
    variables = several(2)
    first = start(["cnn-pipeline", "train"], workdir, JAX_PROCESS_ID="0", **variables)
    second = start(["cnn-pipeline", "train"], workdir, JAX_PROCESS_ID="1", **variables)
    assert second.stdout is not None
    for line in second.stdout:  # Keras prints the epochs on stdout
        if line.startswith("Epoch 2/"):
            break
    os.kill(second.pid, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = first.communicate(timeout=120)
    second.communicate()
    assert time.monotonic() - killed < 30
    assert first.returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    address = variables["JAX_COORDINATOR_ADDRESS"]
    assert last.startswith(
        f"cnn-pipeline train: error: process 0 of 2 on {socket.gethostname()} (coordinator "
        f"{address}) lost another process: "
    ), last
    assert last.endswith("; every process stops")
