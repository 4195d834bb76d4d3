"""One training on several processes or hosts: the same `cnn-pipeline train` on each, with
Keras's DataParallel distribution on the JAX backend across all their devices.

Each process learns its place from the environment: JAX_COORDINATOR_ADDRESS (process 0's
HOST:PORT, which JAX itself reads), JAX_NUM_PROCESSES and JAX_PROCESS_ID; or, in a SLURM job
step with several tasks (`srun`), SLURM_NTASKS, SLURM_PROCID and the step's first node, as JAX
itself detects SLURM. Every process needs the same commit, params.yaml and prepared data (from
`dvc pull`, say): rendezvous.py compares them before JAX starts. Process 0 alone writes the
outputs, the resume state and the MLflow run; the others train and write nothing.

TensorFlow is refused: its MultiWorkerMirroredStrategy fails in `fit` with Keras 3
(keras-team/keras#20585, open).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline import paths
from cnn_pipeline.accelerators import pinned_versions
from cnn_pipeline.config import AugmentConfig, NetworkConfig, TrainConfig
from cnn_pipeline.errors import TrainingInterrupted, UserError, first_line
from cnn_pipeline.prepared import INFO_FILE, SPLITS, load_split
from cnn_pipeline.rendezvous import Member, meet, split_address
from cnn_pipeline.resume import PACKAGE_DIR, digest

logger = logging.getLogger(__name__)

COORDINATOR_VARIABLE = "JAX_COORDINATOR_ADDRESS"  # process 0's HOST:PORT; JAX reads it too
PROCESS_COUNT_VARIABLE = "JAX_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "JAX_PROCESS_ID"
# Seconds every process waits for the others to come (and JAX's initialization_timeout).
TIMEOUT_VARIABLE = "CNN_PIPELINE_PEER_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # JAX's own default: time to start the training on every host by hand
# The port JAX picks under SLURM: one per job, in the ephemeral range, the same on every node.
SLURM_PORT_BASE, SLURM_PORTS = 65536 - 4096, 4096
LIBRARIES = ("keras", "jax", "jaxlib")  # a difference here breaks JAX's collectives


@dataclass(frozen=True)
class Cluster:
    coordinator_address: str  # process 0's HOST:PORT
    process_count: int
    process_id: int
    timeout: float  # seconds
    source: str  # the variables it came from, for messages

    @property
    def writes_outputs(self) -> bool:
        return self.process_id == 0

    def describe(self) -> str:
        """'process 1 of 2 on node7 (coordinator 10.0.0.1:1234)'."""
        return (
            f"process {self.process_id} of {self.process_count} on {socket.gethostname()} "
            f"(coordinator {self.coordinator_address})"
        )


def from_environment(environment: Mapping[str, str]) -> Cluster | None:
    """The cluster this process belongs to, or None when it trains alone. UserError for
    incomplete or contradictory variables, and for a backend other than JAX."""
    if PROCESS_COUNT_VARIABLE in environment or PROCESS_ID_VARIABLE in environment:
        source = f"{PROCESS_COUNT_VARIABLE}/{PROCESS_ID_VARIABLE}"
        count = _integer(environment, PROCESS_COUNT_VARIABLE, source)
        process_id = _integer(environment, PROCESS_ID_VARIABLE, source)
        address = environment.get(COORDINATOR_VARIABLE)
        if address is None:
            raise UserError(
                f"{source} are set but {COORDINATOR_VARIABLE} is not: set it to "
                "process 0's HOST:PORT on every process"
            )
    elif "SLURM_STEP_NODELIST" in environment and environment.get("SLURM_NTASKS", "1") != "1":
        source = "SLURM_NTASKS/SLURM_PROCID"
        count = _integer(environment, "SLURM_NTASKS", source)
        process_id = _integer(environment, "SLURM_PROCID", source)
        port = SLURM_PORT_BASE + int(environment.get("SLURM_JOB_ID", "0")) % SLURM_PORTS
        first_node = _first_node(environment["SLURM_STEP_NODELIST"])
        address = environment.get(COORDINATOR_VARIABLE, f"{first_node}:{port}")
    else:
        return None
    if count < 2:
        return None
    if not 0 <= process_id < count:
        raise UserError(
            f"{source}: process id {process_id} is invalid for {count} processes: "
            f"give each process its own id from 0 to {count - 1}"
        )
    split_address(address)  # HOST:PORT, or a one-line error
    backend = environment.get("KERAS_BACKEND", "tensorflow")
    if backend != "jax":
        raise UserError(
            f"{source} ask for {count} processes, but training on several processes needs "
            f"Keras's JAX backend, not KERAS_BACKEND={backend} (TensorFlow's "
            "MultiWorkerMirroredStrategy fails with Keras 3, keras-team/keras#20585): run with "
            "KERAS_BACKEND=jax"
        )
    try:
        timeout = float(environment.get(TIMEOUT_VARIABLE) or DEFAULT_TIMEOUT)
    except ValueError:
        raise UserError(
            f"{TIMEOUT_VARIABLE} = {environment[TIMEOUT_VARIABLE]!r} is invalid: give seconds"
        ) from None
    return Cluster(address, count, process_id, timeout, source)


def _integer(environment: Mapping[str, str], name: str, source: str) -> int:
    value = environment.get(name)
    if value is None or not value.strip().isdigit():
        raise UserError(
            f"{source}: {name} = {value!r} is invalid: give a whole number on every process"
        )
    return int(value)


def _first_node(node_list: str) -> str:
    """The first host of a SLURM node list: 'node[001-004,007],gpu2' -> 'node001'."""
    first = re.match(r"([^,\[]*)(?:\[([^\],-]*))?", node_list)
    return first.group(1) + (first.group(2) or "") if first else node_list


def digests(trained_params: Mapping[str, Any], prepared_dir: Path) -> dict[str, str]:
    """What must be equal on every process: the params the train stage reads, the prepared
    data, the package's code and the libraries that train."""
    libraries = pinned_versions(LIBRARIES)
    return {
        "params (params.yaml)": digest(trained_params, []),
        f"data ({paths.PREPARED_DIR})": _data_digest(prepared_dir),
        "code (src/cnn_pipeline)": digest(None, sorted(PACKAGE_DIR.rglob("*.py"))),
        f"libraries ({', '.join(libraries)})": hashlib.sha256(
            json.dumps(libraries).encode()
        ).hexdigest()[:16],
    }


def _data_digest(prepared_dir: Path) -> str:
    """Of the prepared arrays and dataset.json, not the .npz files: np.savez stamps each
    archive member with the time it was written, so two hosts that ran the same preprocess
    have equal arrays in files that differ."""
    hashed = hashlib.sha256((prepared_dir / INFO_FILE).read_bytes())
    for name in SPLITS:
        split = load_split(prepared_dir, name)
        for array in (split.images, split.labels):
            hashed.update(f"{name} {array.dtype} {array.shape}".encode())
            hashed.update(np.ascontiguousarray(array).tobytes())
    return hashed.hexdigest()[:16]


def join(cluster: Cluster, trained_params: Mapping[str, Any], prepared_dir: Path) -> None:
    """Meet every other process (rendezvous.py), then start JAX's distributed runtime, before
    anything else touches JAX. UserError when the global batch does not split evenly."""
    batch_size = int(trained_params["train"]["batch_size"])
    if batch_size % cluster.process_count:
        raise UserError(
            f"params.yaml: train.batch_size = {batch_size} does not split evenly over "
            f"{cluster.process_count} processes: give a multiple of {cluster.process_count}"
        )
    me = Member(
        cluster.process_id,
        cluster.process_count,
        socket.gethostname(),
        digests(trained_params, prepared_dir),
    )
    logger.info(
        "%s: waiting up to %g s for the other processes", cluster.describe(), cluster.timeout
    )
    meet(me, cluster.coordinator_address, cluster.timeout)
    import jax

    # keras.distribution.initialize calls this too, but cannot pass the timeout; it also
    # agrees a random seed across processes, which the configured seed makes unnecessary.
    jax.distributed.initialize(
        cluster.coordinator_address,
        cluster.process_count,
        cluster.process_id,
        initialization_timeout=max(int(cluster.timeout), 1),
    )
    logger.info(
        "%s: all %d processes joined, %d devices",
        cluster.describe(),
        jax.process_count(),
        jax.device_count(),
    )


@contextlib.contextmanager
def stop_together(cluster: Cluster | None, command: str = "train") -> Iterator[None]:
    """Around a training on several processes: any error ends this process at once, after one
    line, so that the others' next collective fails and they stop too.

    A normal exit would run JAX's shutdown, which waits for every process (for minutes) and
    then aborts with a stack dump when one died."""
    if cluster is None:
        yield
        return
    try:
        yield
    except BaseException as error:  # every way out must skip JAX's shutdown
        if isinstance(error, UserError):
            line, status = str(error), 130 if isinstance(error, TrainingInterrupted) else 2
        elif _lost_a_process(error):
            line = (
                f"{cluster.describe()} lost another process: {first_line(error)}; every "
                "process stops"
            )
            status = 2
        elif isinstance(error, KeyboardInterrupt):
            line, status = "interrupted; every process stops", 130
        else:
            traceback.print_exc()
            line, status = f"{cluster.describe()} failed: {first_line(error)}", 1
        # The CLI's own one-line format (cli.main), which this exit skips.
        print(f"cnn-pipeline {command}: error: {line}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(status)


def _lost_a_process(error: BaseException) -> bool:
    """A collective that failed because another process is gone: JAX raises its runtime error
    (or, inside Keras's placement of a variable, a ValueError) quoting Gloo, its CPU
    collectives, or the coordination service."""
    import jax

    message = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) or any(
        word in message for word in ("Gloo", "coordination service", "heartbeat")
    )


def train_as_peer(
    model_config: NetworkConfig,
    augment_config: AugmentConfig,
    train_config: TrainConfig,
    workdir: Path,
) -> None:
    """A process other than 0: train with the others, write nothing."""
    from cnn_pipeline.accelerators import check_device, detect
    from cnn_pipeline.prepared import load_info
    from cnn_pipeline.training import train_model

    prepared_dir = workdir / paths.PREPARED_DIR
    train = load_split(prepared_dir, "train")
    validation = load_split(prepared_dir, "validation")
    accelerators = detect(train_config.device)
    check_device(train_config.device, accelerators)
    result = train_model(
        train,
        validation,
        load_info(prepared_dir),
        model_config,
        augment_config,
        train_config,
        accelerators=accelerators,
    )
    logger.info("trained with process 0 in %.1f s; process 0 writes the outputs", result.seconds)
