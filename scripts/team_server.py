"""A trial team server on one machine: PostgreSQL, an S3 stand-in and `mlflow server`.

    python scripts/team_server.py start [--data .team-server] [--port 5000] [--auth]
    python scripts/team_server.py stop [--data .team-server]

`start` runs three existing servers on 127.0.0.1, each on a free port except MLflow's, with
everything they keep under one folder (`--data`):

- PostgreSQL (Debian's `postgresql` package, or any `initdb`/`pg_ctl` on PATH): MLflow's
  backend store, and the database `optuna` where `cnn-pipeline tune` keeps a search that
  several machines share, in DATA/postgres. PostgreSQL refuses to run as root, so as root it
  runs as the `postgres` user the package creates.
- moto in server mode: an S3 stand-in holding the bucket `mlflow` (in memory: the artifacts
  are gone once it stops; a real team uses a real S3 bucket).
- `mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination
  s3://mlflow/artifacts`: the server proxies artifacts, so clients need only its URL, never
  S3 credentials. With `--auth` it runs MLflow's basic-auth app (user `admin`, the password
  printed and kept in DATA/server.json).

It prints the variables a client sets and returns once MLflow answers; `stop` ends the three
servers it started. DATA/server.json names their processes, ports and URIs; DATA/*.log holds
their output. Tests import `start` and `stop` to run the same servers on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from cnn_pipeline.search.storage import STORAGE_VARIABLE as SEARCH_STORAGE_VARIABLE

from team_services import (
    DATABASE,
    DATABASE_USER,
    SEARCH_DATABASE,
    TeamServerError,
    free_port,
    postgres_os_user,
    spawn,
    start_postgres,
    stop_postgres,
    stop_process_group,
    wait_for_http,
)

BIN_DIR = Path(sys.executable).parent  # this environment's mlflow and moto_server
STATE_FILE = "server.json"
BUCKET = "mlflow"
# moto accepts any credentials; these only have to be the same for the server and the bucket.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ADMIN_USER = "admin"
START_TIMEOUT_S = 120.0  # `mlflow server` migrates a fresh database first: tens of seconds here


@dataclass
class TeamServer:
    """What `start` started: read back by `stop`, and by clients and tests for the URIs."""

    data_dir: str
    postgres_port: int
    s3_port: int
    mlflow_port: int
    moto_pid: int
    mlflow_pid: int
    postgres_os_user: str | None  # the user PostgreSQL runs as where we are root
    admin_password: str | None  # set when basic auth is on

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def database_url(self, database: str) -> str:
        return f"postgresql+psycopg2://{DATABASE_USER}@127.0.0.1:{self.postgres_port}/{database}"

    @property
    def backend_store_uri(self) -> str:
        return self.database_url(DATABASE)

    @property
    def search_storage_url(self) -> str:
        """Where the searches of every teammate's `cnn-pipeline tune` share their studies."""
        return self.database_url(SEARCH_DATABASE)

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{BUCKET}/artifacts"

    def client_environment(self) -> dict[str, str]:
        """What a client sets to log here, and to share hyperparameter searches."""
        environment = {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            SEARCH_STORAGE_VARIABLE: self.search_storage_url,
        }
        if self.admin_password:
            environment["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
            environment["MLFLOW_TRACKING_PASSWORD"] = self.admin_password
        return environment


def _server_environment(server: TeamServer) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    environment.update(S3_CREDENTIALS)
    environment["MLFLOW_S3_ENDPOINT_URL"] = server.s3_endpoint_url
    return environment


def start_mlflow(server: TeamServer, workers: int = 2) -> None:
    """Start `mlflow server` for an existing PostgreSQL and bucket, record its pid (in
    `server` and DATA/server.json, at once: an interrupted start can still be stopped) and
    return once it answers. Also what a test calls to restart it."""
    data_dir = Path(server.data_dir)
    environment = _server_environment(server)
    arguments = [
        str(BIN_DIR / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.mlflow_port),
        "--backend-store-uri",
        server.backend_store_uri,
        "--artifacts-destination",
        server.artifacts_destination,
        "--workers",
        str(workers),
    ]
    if server.admin_password:
        config = data_dir / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {server.backend_store_uri}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        environment["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = server.admin_password
        environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        arguments += ["--app-name", "basic-auth"]
    log = data_dir / "mlflow.log"
    server.mlflow_pid = spawn(arguments, log, environment)
    write_state(server)
    wait_for_http(f"{server.tracking_uri}/health", server.mlflow_pid, log, START_TIMEOUT_S)


def start(
    data_dir: Path, mlflow_port: int = 5000, auth: bool = False, workers: int = 2
) -> TeamServer:
    """Start PostgreSQL, moto and `mlflow server` with their data under `data_dir`."""
    import boto3

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / STATE_FILE).is_file():
        raise TeamServerError(
            f"{data_dir / STATE_FILE} exists: a team server may run from {data_dir}; "
            f"stop it first (`python scripts/team_server.py stop --data {data_dir}`)"
        )
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", mlflow_port)) == 0:
            raise TeamServerError(f"port {mlflow_port} is taken: pass another --port")
    os_user = postgres_os_user()
    server = TeamServer(
        data_dir=str(data_dir),
        postgres_port=free_port(),
        s3_port=free_port(),
        mlflow_port=mlflow_port,
        moto_pid=0,
        mlflow_pid=0,
        postgres_os_user=os_user,
        admin_password=secrets.token_urlsafe(12) if auth else None,
    )
    start_postgres(data_dir, server.postgres_port, os_user)
    try:
        log = data_dir / "moto.log"
        server.moto_pid = spawn(
            [str(BIN_DIR / "moto_server"), "-H", "127.0.0.1", "-p", str(server.s3_port)],
            log,
            _server_environment(server),
        )
        write_state(server)
        wait_for_http(f"{server.s3_endpoint_url}/moto-api/", server.moto_pid, log, START_TIMEOUT_S)
        s3 = boto3.client("s3", endpoint_url=server.s3_endpoint_url, **_boto_credentials())
        s3.create_bucket(Bucket=BUCKET)
        start_mlflow(server, workers)
    except BaseException:
        stop(data_dir, server)
        raise
    return server


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def write_state(server: TeamServer) -> None:
    state = Path(server.data_dir) / STATE_FILE
    temporary = state.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(server), indent=2) + "\n")
    temporary.chmod(0o600)  # it may hold the admin password
    temporary.replace(state)


def read_state(data_dir: Path) -> TeamServer:
    state = data_dir.resolve() / STATE_FILE
    if not state.is_file():
        raise TeamServerError(f"{state} is missing: no team server was started from {data_dir}")
    return TeamServer(**json.loads(state.read_text()))


def stop(data_dir: Path, server: TeamServer | None = None) -> None:
    """Stop what `start` started from `data_dir`; the data stays for the next start."""
    server = server or read_state(data_dir)
    for pid in (server.mlflow_pid, server.moto_pid):
        if pid:
            stop_process_group(pid)
    stop_postgres(data_dir.resolve(), server.postgres_os_user)
    (data_dir.resolve() / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--data", type=Path, default=Path(".team-server"), help="data folder")
    parser.add_argument("--port", type=int, default=5000, help="MLflow's port (start)")
    parser.add_argument("--auth", action="store_true", help="basic auth (start)")
    parser.add_argument("--workers", type=int, default=2, help="MLflow's worker processes")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "stop":
            stop(arguments.data)
            print(f"team server in {arguments.data.resolve()} stopped")
            return 0
        server = start(arguments.data, arguments.port, arguments.auth, arguments.workers)
    except TeamServerError as error:
        print(f"team_server {arguments.command}: error: {error}", file=sys.stderr)
        return 1
    print(f"MLflow at {server.tracking_uri} (runs in PostgreSQL, artifacts in S3 via the server)")
    print("Clients set:")
    for key, value in server.client_environment().items():
        print(f"  export {key}={value}")
    print(f"S3 stand-in: {server.s3_endpoint_url} (bucket {BUCKET!r}, keys in S3_CREDENTIALS)")
    print(f"Stop with: python scripts/team_server.py stop --data {arguments.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
