"""What the trial team server (team_server.py) runs on: PostgreSQL, MLflow's backend store and
the database of shared hyperparameter searches, in one cluster folder on 127.0.0.1, started and
stopped with its own tools (initdb, pg_ctl, createdb from Debian's `postgresql` package or
PATH; as root it runs as the `postgres` user the package creates, since PostgreSQL refuses
root), and starting, waiting for and stopping the server processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

DATABASE = "mlflow"
DATABASE_USER = "mlflow"
SEARCH_DATABASE = "optuna"  # the studies of `cnn-pipeline tune` that several machines share


class TeamServerError(Exception):
    """One line: what failed and what to do."""


def postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, or in Debian's /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    raise TeamServerError(
        "PostgreSQL's pg_ctl is neither on PATH nor in /usr/lib/postgresql/*/bin: install it "
        "(`apt-get install postgresql` on Debian/Ubuntu, `brew install postgresql` on macOS)"
    )


def postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root: there, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise TeamServerError(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as: "
            "run this as an ordinary user, or install Debian's `postgresql` package"
        ) from None
    return "postgres"


def _run_postgres_tool(arguments: list[str], os_user: str | None) -> None:
    user = {"user": os_user, "group": os_user, "extra_groups": []} if os_user else {}
    result = subprocess.run(arguments, capture_output=True, text=True, cwd="/", **user)  # type: ignore[call-overload]
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise TeamServerError(
            f"{' '.join(arguments)} exited {result.returncode}: "
            f"{message[-1] if message else 'no output'}"
        )


def start_postgres(data_dir: Path, port: int, os_user: str | None) -> None:
    bin_dir = postgres_bin_dir()
    cluster = data_dir / "postgres"
    if os_user:
        # The postgres user must reach the cluster: every folder above it must be searchable.
        probe = subprocess.run(
            ["test", "-w", str(data_dir)], user=os_user, group=os_user, extra_groups=[]
        )
        if probe.returncode != 0:
            shutil.chown(data_dir, os_user, os_user)
            probe = subprocess.run(
                ["test", "-w", str(data_dir)], user=os_user, group=os_user, extra_groups=[]
            )
        if probe.returncode != 0:
            raise TeamServerError(
                f"PostgreSQL runs as {os_user!r} (not as root), which cannot reach {data_dir}: "
                "pick a --data folder whose parent folders others may enter (under /tmp, say)"
            )
    if not (cluster / "PG_VERSION").is_file():
        _run_postgres_tool(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(cluster),
                "-U",
                DATABASE_USER,
                "-A",
                "trust",  # on 127.0.0.1 and a socket in the cluster's folder only
                "-E",
                "UTF8",
            ],
            os_user,
        )
        fresh = True
    else:
        fresh = False
    options = f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1"
    _run_postgres_tool(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(cluster),
            "-l",
            str(data_dir / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        ],
        os_user,
    )
    # A cluster made before searches were shared lacks their database: created on its start.
    for database in (DATABASE, SEARCH_DATABASE) if fresh else (SEARCH_DATABASE,):
        try:
            _run_postgres_tool(
                [
                    str(bin_dir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    DATABASE_USER,
                    database,
                ],
                os_user,
            )
        except TeamServerError as error:
            if "already exists" not in str(error):
                raise


def stop_postgres(data_dir: Path, os_user: str | None) -> None:
    cluster = data_dir / "postgres"
    if (cluster / "postmaster.pid").is_file():
        _run_postgres_tool(
            [str(postgres_bin_dir() / "pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"],
            os_user,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def spawn(arguments: list[str], log: Path, environment: dict[str, str]) -> int:
    """Start a server in a session of its own (so that `stop` ends it with its workers)."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            arguments,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    return process.pid


def wait_for_http(url: str, pid: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        errors = (urllib.error.URLError, ConnectionError, TimeoutError)
        with contextlib.suppress(*errors), urllib.request.urlopen(url, timeout=5):
            return
        if not alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise TeamServerError(f"the server for {url} stopped at start: {tail[0]} (see {log})")
        time.sleep(0.3)
    raise TeamServerError(f"{url} did not answer within {timeout_s:.0f} s (see {log})")


def alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it where we are its parent
    except ChildProcessError:
        waited = 0
    if waited == pid:
        return False
    if not Path("/proc").is_dir():  # not Linux: no zombie check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def stop_process_group(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the server's session (its workers too), then SIGKILL what is left."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if not alive(pid):
            return
