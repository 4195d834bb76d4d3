"""Before a training on several processes starts JAX: every process meets process 0 at the
coordinator's address, says who it is and what it trains on, and hears back whether all
processes came and agree.

Why not leave this to `jax.distributed.initialize`: when a process never comes, or cannot reach
the coordinator, JAX 0.10 ends every process that waits with a C++ fatal error and a stack dump
after its `initialization_timeout` (measured: 'Terminating process because the JAX distributed
service detected fatal errors ... DEADLINE_EXCEEDED'), which names neither the missing process
nor the address. Here the same wait ends in one line naming both, and a host whose params,
data or code differ from process 0's stops every process before any training.

The exchange is one line of JSON each way over plain TCP, on the coordinator's own port: process
0 listens there until every other process has reported (or the timeout passes), answers each,
then closes the port for JAX's coordinator to take.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cnn_pipeline.errors import UserError

RETRY_SECONDS = 0.5  # between attempts to reach a coordinator that is not listening yet


@dataclass(frozen=True)
class Member:
    """One process of the training, as it introduces itself."""

    process_id: int
    process_count: int
    host: str  # socket.gethostname()
    digests: Mapping[str, str]  # what the process trains on: params, data, code, libraries


def split_address(address: str) -> tuple[str, int]:
    """'10.0.0.1:1234' or '[::1]:1234' -> host, port."""
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise UserError(f"coordinator address {address!r} is invalid: give HOST:PORT")
    return host.strip("[]"), int(port)


def meet(me: Member, address: str, timeout: float) -> None:
    """Meet every other process at `address` (process 0 listens, the others connect) within
    `timeout` seconds. UserError, on every process that got this far, when one is missing or
    differs from process 0."""
    if me.process_id == 0:
        _gather(me, address, timeout)
    else:
        _report(me, address, timeout)


def _gather(me: Member, address: str, timeout: float) -> None:
    _, port = split_address(address)
    deadline = time.monotonic() + timeout
    connections: list[socket.socket] = []
    members: dict[int, Member] = {0: me}
    duplicates: list[Member] = []
    # All interfaces, as JAX's coordinator binds ('[::]:PORT'): the other hosts reach it by name.
    with socket.create_server(("", port)) as server:
        while len(members) < me.process_count and (remaining := deadline - time.monotonic()) > 0:
            server.settimeout(remaining)
            try:
                connection, _ = server.accept()
            except TimeoutError:
                break
            connection.settimeout(max(remaining, 1.0))
            try:
                member = Member(**json.loads(_read_line(connection)))
            except (OSError, ValueError, TypeError):
                connection.close()  # not one of ours (a port scanner, a stray client)
                continue
            connections.append(connection)
            if member.process_id in members:
                duplicates.append(member)
            members.setdefault(member.process_id, member)
        error = _verdict(me, members, duplicates, address, timeout)
        for connection in connections:
            _answer(connection, {"error": error})
    if error:
        raise UserError(error)


def _verdict(
    me: Member,
    members: Mapping[int, Member],
    duplicates: list[Member],
    address: str,
    timeout: float,
) -> str:
    """'' when every process came and agrees with process 0; else the one-line reason."""
    count = me.process_count
    if duplicates:
        twice = duplicates[0]
        return (
            f"two processes were started with JAX_PROCESS_ID={twice.process_id}, on "
            f"{members[twice.process_id].host} and on {twice.host}: give each process its own "
            f"id from 0 to {count - 1}"
        )
    wrong_count = [m for m in members.values() if m.process_count != count]
    if wrong_count:
        other = wrong_count[0]
        return (
            f"process {other.process_id} on {other.host} was started for "
            f"{other.process_count} processes, process 0 on {me.host} for {count}: give every "
            "process the same JAX_NUM_PROCESSES"
        )
    missing = [index for index in range(count) if index not in members]
    if missing:
        came = ", ".join(f"process {m.process_id} on {m.host}" for m in members.values())
        names = ("processes " if len(missing) > 1 else "process ") + ", ".join(map(str, missing))
        return (
            f"{names} of {count} did not reach the coordinator {address} within "
            f"{timeout:g} s (there: {came}): start `cnn-pipeline train` with JAX_PROCESS_ID="
            f"{missing[0]} on its host, or check that the host can reach {address}; every "
            "process stops"
        )
    for index in sorted(members):
        member = members[index]
        differing = [key for key, value in me.digests.items() if member.digests.get(key) != value]
        if differing:
            return (
                f"process {index} on {member.host} trains on other {' and '.join(differing)} "
                f"than process 0 on {me.host}: give every host the same commit, params.yaml "
                "and prepared data (`git checkout`, `dvc pull`); every process stops"
            )
    return ""


def _answer(connection: socket.socket, message: Mapping[str, Any]) -> None:
    """Send one line, then wait for the other side to close first: the coordinator's port is
    then free at once for JAX to bind (no TIME_WAIT on this side)."""
    with connection:
        try:
            connection.sendall(json.dumps(message).encode() + b"\n")
            connection.shutdown(socket.SHUT_WR)
            connection.settimeout(5.0)
            while connection.recv(1024):
                pass
        except OSError:
            pass  # that process is gone; it stops by itself


def _report(me: Member, address: str, timeout: float) -> None:
    host, port = split_address(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = socket.create_connection((host, port), timeout=RETRY_SECONDS * 4)
            break
        except OSError as error:
            if time.monotonic() + RETRY_SECONDS > deadline:
                raise UserError(
                    f"process {me.process_id} of {me.process_count} on {me.host} cannot reach "
                    f"the coordinator {address} (process 0) within {timeout:g} s ({error}): "
                    "start process 0 there, or check JAX_COORDINATOR_ADDRESS and the firewall"
                ) from None
            time.sleep(RETRY_SECONDS)
    with connection:
        # Process 0 answers once every process came or its own timeout passed.
        connection.settimeout(timeout + 10.0)
        try:
            connection.sendall(json.dumps(me.__dict__).encode() + b"\n")
            answer = json.loads(_read_line(connection))
        except (OSError, ValueError) as error:
            raise UserError(
                f"process {me.process_id} of {me.process_count} on {me.host} lost the "
                f"coordinator {address} (process 0) before every process had come ({error})"
            ) from None
    if answer.get("error"):
        raise UserError(answer["error"])


def _read_line(connection: socket.socket) -> str:
    received = b""
    while not received.endswith(b"\n"):
        block = connection.recv(65536)
        if not block:
            raise ValueError("connection closed")
        received += block
    return received.decode()
