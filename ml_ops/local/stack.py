"""Embedded local stack: S3 (rclone), MLflow, the serving gateway and Airflow 3 as real processes under $MLOPS_HOME.

    python -m ml_ops.local.stack {up,down,status}

Default shape (a laptop): SQLite metadata for Airflow and MLflow, LocalExecutor. The production shape runs
the same processes on external servers, selected by environment variables (or the matching fields):

    MLOPS_DB_URL=postgresql://user@host/airflow      Airflow metadata DB (default: SQLite under $MLOPS_HOME)
    MLOPS_MLFLOW_DB_URL=postgresql://user@host/mlflow  MLflow backend store (default: SQLite under $MLOPS_HOME)
    MLOPS_EXECUTOR=celery                            CeleryExecutor (default: local = LocalExecutor)
    MLOPS_BROKER_URL=redis://host:6379/0             Celery broker (required with celery)
    MLOPS_RESULT_BACKEND=db+postgresql://...         Celery result backend (default: db+$MLOPS_DB_URL)
    MLOPS_CELERY_WORKERS=2                           `airflow celery worker` processes, concurrency 1 each
    MLOPS_GATEWAY_PORT=8000                          serving gateway (python -m ml_ops.serving); its admin token is
                                                     MLOPS_GATEWAY_TOKEN, else generated once into secrets.json

Every service runs in its own session (process group) with a pid file in $MLOPS_HOME/run and a log in
$MLOPS_HOME/logs, so `down` can kill whole process trees and then prove via /proc that nothing is left.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # rclone, mlflow and airflow live next to the interpreter
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
REGION = "us-east-1"
# Set only in the environment of processes we spawn: lets the /proc scan find our descendants without
# matching a user's shell that merely sourced stack.env.
OWNER_MARKER = "MLOPS_STACK_OWNER"

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICES = ("s3", "mlflow", "gateway") + tuple(f"airflow-{c}" for c in AIRFLOW_COMPONENTS)
WORKER_PREFIX = "airflow-worker-"  # service names of Celery workers: airflow-worker-1, airflow-worker-2, ...
HEALTH_KEY = {  # /api/v2/monitor/health section for each Airflow component
    "airflow-api-server": "metadatabase",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}


class StackError(RuntimeError):
    """A one-line, user-facing reason why the stack could not be started or stopped."""


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None = None


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    port: int | None
    running: bool
    healthy: bool
    detail: str
    log: str


@dataclass
class Stack:
    home: Path | None = None
    s3_port: int | None = None
    mlflow_port: int | None = None
    airflow_port: int | None = None
    gateway_port: int | None = None
    bucket: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    startup_timeout: float | None = None
    stop_grace: float = 15.0
    db_url: str | None = None  # Airflow metadata DB; None = SQLite in airflow_home
    mlflow_db_url: str | None = None  # MLflow backend store; None = SQLite under home/mlflow
    executor: str | None = None  # "local" or "celery"
    broker_url: str | None = None
    result_backend: str | None = None
    celery_workers: int | None = None
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        e = os.environ
        self.home = Path(self.home or e.get("MLOPS_HOME") or REPO / ".local").resolve()
        self.s3_port = int(self.s3_port or e.get("MLOPS_S3_PORT", 9000))
        self.mlflow_port = int(self.mlflow_port or e.get("MLOPS_MLFLOW_PORT", 5000))
        self.airflow_port = int(self.airflow_port or e.get("MLOPS_AIRFLOW_PORT", 8080))
        self.gateway_port = int(self.gateway_port or e.get("MLOPS_GATEWAY_PORT", 8000))
        self.bucket = self.bucket or e.get("MLOPS_BUCKET", "mlops")
        # Cold start measured ~50 s on 2 idle cores; leave headroom for a loaded CI machine.
        self.startup_timeout = float(self.startup_timeout or e.get("MLOPS_STARTUP_TIMEOUT", 120))
        self.s3_access_key = self.s3_access_key or e.get("MLOPS_S3_ACCESS_KEY", "mlops")
        self.s3_secret_key = self.s3_secret_key or e.get("MLOPS_S3_SECRET_KEY", "mlops-secret")
        self.db_url = self.db_url or e.get("MLOPS_DB_URL") or None
        self.mlflow_db_url = self.mlflow_db_url or e.get("MLOPS_MLFLOW_DB_URL") or None
        self.executor = (self.executor or e.get("MLOPS_EXECUTOR") or "local").lower()
        self.broker_url = self.broker_url or e.get("MLOPS_BROKER_URL") or None
        self.result_backend = (
            self.result_backend or e.get("MLOPS_RESULT_BACKEND") or (f"db+{self.db_url}" if self.db_url else None)
        )
        self.celery_workers = int(self.celery_workers or e.get("MLOPS_CELERY_WORKERS", 2))

    @classmethod
    def from_env(cls) -> Stack:
        return cls()

    # ---- locations -------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def source_db(self) -> Path:
        return self.home / "source" / "source.db"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gateway_token(self) -> str:
        """Bearer token of the gateway's admin routes: MLOPS_GATEWAY_TOKEN, else generated once."""
        return os.environ.get("MLOPS_GATEWAY_TOKEN") or self._secrets()["gateway_token"]

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    @property
    def worker_names(self) -> list[str]:
        """Service names of the Celery workers (empty with the LocalExecutor)."""
        return [f"{WORKER_PREFIX}{i}" for i in range(1, self.celery_workers + 1)] if self.celery else []

    def celery_hostname(self, name: str) -> str:
        # Unique per stack (the API port is) so two stacks sharing a Redis server never clash on names.
        return f"worker{name.removeprefix(WORKER_PREFIX)}@mlops-{self.airflow_port}"

    @property
    def service_names(self) -> tuple[str, ...]:
        """Every service of this stack's shape, in start order."""
        return SERVICES + tuple(self.worker_names)

    @property
    def source_db_url(self) -> str:
        """SQLAlchemy URL of the embedded source database (connection ``source_db``)."""
        return f"sqlite:///{self.source_db}"

    @property
    def admin_login(self) -> tuple[str, str]:
        return ADMIN_USER, ADMIN_PASSWORD

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def admin_password(self) -> str:
        return ADMIN_PASSWORD

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    # ---- environments ----------------------------------------------------------------------------------
    def _secrets(self) -> dict[str, str]:
        """Fernet key, JWT/API secrets and the gateway token, generated once and shared by every component."""
        path = self.home / "secrets.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        if "gateway_token" in known:
            return known
        values = {  # a home from before the gateway keeps its Airflow secrets and gains a token
            "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "jwt_secret": secrets.token_urlsafe(32),
            "api_secret_key": secrets.token_urlsafe(32),
            **known,
            "gateway_token": secrets.token_urlsafe(32),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.chmod(0o600)
        tmp.replace(path)
        return values

    def _airflow_vars(self) -> dict[str, str]:
        """The variables this stack defines for Airflow (what stack.env exports)."""
        s = self._secrets()
        af = self.airflow_home
        identity = {  # always ours: they decide which stack a process belongs to
            "AIRFLOW_HOME": str(af),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url or f"sqlite:///{af / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.celery else "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": s["api_secret_key"],
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(af / "passwords.json"),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": self.s3_access_key,
                    "password": self.s3_secret_key,
                    "extra": {"endpoint_url": self.s3_url, "region_name": REGION},
                }
            ),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.mlflow_port,
                    "schema": "http",
                }
            ),
            "AIRFLOW_CONN_SOURCE_DB": json.dumps({"conn_type": "sqlite", "host": str(self.source_db)}),
            # the canary DAG flushes the gateway's logs through its admin route (password = bearer token)
            "AIRFLOW_CONN_MLOPS_GATEWAY": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.gateway_port,
                    "schema": "http",
                    "password": self.gateway_token,
                }
            ),
            "MLOPS_HOME": str(self.home),
            "MLOPS_BUCKET": self.bucket,
            "MLOPS_REPO": str(REPO),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLOPS_GATEWAY_URL": self.gateway_url,
        }
        if self.celery:
            identity["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url or ""
            identity["AIRFLOW__CELERY__RESULT_BACKEND"] = self.result_backend or ""
        tuning = {  # defaults a caller may override with their own AIRFLOW__* variables
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # True only for unattended screenshots (docs/screenshots.py): every visitor is admin, no login.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "2",  # 2 cores: more task processes only fight for CPU/sqlite
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",  # mlflow/GX imports are slow on 2 cores
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__EXPOSE_CONFIG": "True",
            # rclone's S3 does not need the newer flexible checksums; only send them when required
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }
        return {**tuning, **{k: os.environ[k] for k in tuning if k in os.environ}, **identity}

    def env(self) -> dict[str, str]:
        """Full environment for Airflow processes: the caller's environment plus the stack's variables."""
        return {**os.environ, **self._airflow_vars()}

    def _mlflow_env(self) -> dict[str, str]:
        # Only the tracking server holds S3 credentials; clients upload artifacts through it.
        # The backend store URI goes through the environment so a DB password never shows in `ps`.
        external = {"MLFLOW_BACKEND_STORE_URI": self.mlflow_db_url} if self.mlflow_db_url else {}
        return {
            # The job runner (GenAI prompt/trace jobs) adds ~8 huey processes and ~700 MB; not needed here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            **external,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def _gateway_env(self) -> dict[str, str]:
        """The gateway reads aliases from MLflow, deployment state from and logs to S3 (ml_ops.serving.settings)."""
        include = {"MLOPS_INCLUDE_DIR": os.environ["MLOPS_INCLUDE_DIR"]} if os.environ.get("MLOPS_INCLUDE_DIR") else {}
        return {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLOPS_S3_ENDPOINT": self.s3_url,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLOPS_BUCKET": self.bucket,
            **include,
            "MLOPS_GATEWAY_HOST": "127.0.0.1",
            "MLOPS_GATEWAY_PORT": str(self.gateway_port),
            "MLOPS_GATEWAY_TOKEN": self.gateway_token,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def write_env_file(self) -> Path:
        path = self.home / "stack.env"
        lines = ["# source this file to run `airflow` CLI commands against the local stack"]
        lines.append(f'export PATH={shlex.quote(str(VENV_BIN))}:"$PATH"')
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self._airflow_vars().items())]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    # ---- service definitions -----------------------------------------------------------------------------
    def services(self) -> dict[str, Service]:
        rclone = str(VENV_BIN / "rclone")
        s3 = Service(
            "s3",
            [
                rclone,
                "serve",
                "s3",
                str(self.home / "s3"),
                "--addr",
                f"127.0.0.1:{self.s3_port}",
                "--auth-key",
                f"{self.s3_access_key},{self.s3_secret_key}",
                "--config",
                str(self.home / "rclone.conf"),
                "--log-level",
                "NOTICE",
            ],
            dict(os.environ),
            self.s3_port,
        )
        # An external backend store comes in as MLFLOW_BACKEND_STORE_URI (see _mlflow_env).
        store = [] if self.mlflow_db_url else ["--backend-store-uri", f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"]
        mlflow = Service(
            "mlflow",
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
                *store,
                "--serve-artifacts",
                "--artifacts-destination",
                f"s3://{self.bucket}/mlflow",
                "--allowed-hosts",
                f"127.0.0.1:{self.mlflow_port},localhost:{self.mlflow_port},127.0.0.1,localhost",
            ],
            self._mlflow_env(),
            self.mlflow_port,
        )
        gateway = Service("gateway", [sys.executable, "-m", "ml_ops.serving"], self._gateway_env(), self.gateway_port)
        af_env = self.env()
        airflow = str(VENV_BIN / "airflow")
        out = {"s3": s3, "mlflow": mlflow, "gateway": gateway}
        for comp in AIRFLOW_COMPONENTS:
            argv = [airflow, comp]
            if comp == "api-server":
                argv += ["--host", "127.0.0.1", "--port", str(self.airflow_port), "--workers", "1"]
            if comp in ("scheduler", "triggerer"):
                # One host, one log folder: the API server reads task logs from disk, so no log-serving
                # sidecar (and no extra fixed port 8793/8794 to collide between stacks).
                argv.append("--skip-serve-logs")
            out[f"airflow-{comp}"] = Service(
                f"airflow-{comp}", argv, af_env, self.airflow_port if comp == "api-server" else None
            )
        for name in self.worker_names:
            host = self.celery_hostname(name)
            # One task at a time per worker, like a small production worker; task logs go to the shared
            # log folder, so no log-serving sidecar (its fixed port 8793 would clash between workers).
            argv = [airflow, "celery", "worker", "--celery-hostname", host, "--concurrency", "1", "--skip-serve-logs"]
            # Task instances record where they ran (TI.hostname): on one machine that is the worker's name.
            env = {
                **af_env,
                "MLOPS_WORKER_HOSTNAME": host,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "ml_ops.local.stack.worker_hostname",
            }
            out[name] = Service(name, argv, env)
        return out

    # ---- process bookkeeping ---------------------------------------------------------------------------
    def _read_pid(self, name: str) -> tuple[int, str] | None:
        try:
            pid, start = self.pid_path(name).read_text().split()
            return int(pid), start
        except (FileNotFoundError, ValueError):
            return None

    def _pid(self, name: str) -> int | None:
        """Pid of our running service, or None (pid file missing, process gone, or pid reused)."""
        rec = self._read_pid(name)
        if rec and _alive(rec[0]) and _start_time(rec[0]) == rec[1]:
            return rec[0]
        return None

    def _spawn(self, svc: Service) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(svc.name), "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(svc.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                svc.argv,
                env={**svc.env, OWNER_MARKER: str(self.home)},
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[svc.name] = proc
        self.pid_path(svc.name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")

    def _fail(self, name: str, cause: str | None = None) -> StackError:
        log = self.log_path(name)
        return StackError(f"{name} failed to start: {cause or _last_meaningful_line(log)}; log: {log}")

    # ---- health ----------------------------------------------------------------------------------------
    def _s3_health(self) -> tuple[bool, str]:
        try:
            self.s3_client(connect_timeout=2, retries=0).list_buckets()
            return True, "ok"
        except Exception as exc:  # noqa: BLE001 - any failure just means "not healthy yet"
            return False, f"{type(exc).__name__}: {exc}"

    def _mlflow_health(self) -> tuple[bool, str]:
        return _http_ok(f"{self.mlflow_url}/health")

    def airflow_health(self) -> dict[str, str]:
        """Status per health section ('healthy'/'unhealthy'/...), or {'error': ...} when unreachable."""
        try:
            with urllib.request.urlopen(f"{self.airflow_url}/api/v2/monitor/health", timeout=3) as resp:
                body = json.load(resp)
            return {k: (v or {}).get("status") or "unknown" for k, v in body.items()}
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}"}

    def celery_ping(self, timeout: float = 1.0) -> set[str] | str:
        """Hostnames of the Celery workers that answer a broadcast ping on the broker, or an error string.

        A reply means the worker is connected to the broker and its consumer loop runs: it can take tasks.
        """
        from celery import Celery

        app = Celery("mlops-stack-ping", broker=self.broker_url, set_as_current=False)
        app.conf.broker_connection_retry_on_startup = False
        try:
            return {host for reply in app.control.ping(timeout=timeout) for host in reply}
        except Exception as exc:  # noqa: BLE001 - broker down just means "not healthy"
            return f"broker {type(exc).__name__}: {exc}"
        finally:
            app.close()

    def _worker_health(self, name: str, ping: set[str] | str) -> tuple[bool, str]:
        if isinstance(ping, str):
            return False, ping
        host = self.celery_hostname(name)
        return (True, f"{host} answers ping") if host in ping else (False, f"{host} does not answer ping yet")

    def _health(
        self, name: str, airflow: dict[str, str] | None = None, ping: set[str] | str | None = None
    ) -> tuple[bool, str]:
        if name == "s3":
            return self._s3_health()
        if name == "mlflow":
            return self._mlflow_health()
        if name == "gateway":
            return _http_ok(f"{self.gateway_url}/health")  # the process is up; models load in the background
        if name.startswith(WORKER_PREFIX):
            return self._worker_health(name, ping if ping is not None else self.celery_ping())
        airflow = airflow if airflow is not None else self.airflow_health()
        if "error" in airflow:
            return False, airflow["error"]
        status = airflow.get(HEALTH_KEY[name], "missing")
        return status == "healthy", status

    def _wait_healthy(self, names: list[str]) -> None:
        """Wait until every service is healthy; fail fast if one of its processes exits."""
        pending = list(names)
        deadline = time.monotonic() + self.startup_timeout
        last: dict[str, str] = {}
        while pending:
            airflow = self.airflow_health() if any(n.startswith("airflow-") for n in pending) else {}
            ping = self.celery_ping() if any(n.startswith(WORKER_PREFIX) for n in pending) else set()
            for name in list(pending):
                if self._pid(name) is None:
                    raise self._fail(name)
                ok, detail = self._health(name, airflow, ping)
                last[name] = detail
                if ok:
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                name = pending[0]
                raise self._fail(
                    name,
                    f"not healthy after {self.startup_timeout:.0f}s "
                    f"({last[name]}); last log line: {_last_meaningful_line(self.log_path(name))}",
                )
            if pending:
                time.sleep(0.5)

    # ---- lifecycle -------------------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "stack.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # two concurrent `up`s must not both start processes
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare_dirs(self) -> None:
        for sub in ("s3", "mlflow", "airflow", "source", "run", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "rclone.conf").touch()
        pw = self.airflow_home / "passwords.json"
        if not pw.exists():
            pw.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))

    def _check_ports(self, names: list[str]) -> None:
        svcs = self.services()
        for name in names:
            port = svcs[name].port
            if port is not None and self._pid(name) is None and not _port_free(port):
                label = "airflow" if name.startswith("airflow") else name
                var = {"s3": "MLOPS_S3_PORT", "mlflow": "MLOPS_MLFLOW_PORT", "gateway": "MLOPS_GATEWAY_PORT"}.get(
                    name, "MLOPS_AIRFLOW_PORT"
                )
                raise StackError(f"port {port} ({label}) is already in use by another process; set {var}")

    def _check_shape(self) -> None:
        """Refuse an impossible configuration and unreachable servers before starting anything."""
        if self.executor not in ("local", "celery"):
            raise StackError(f"MLOPS_EXECUTOR={self.executor!r}: expected 'local' or 'celery'")
        if self.celery:
            if not self.broker_url:
                raise StackError(
                    "MLOPS_EXECUTOR=celery needs a broker: set MLOPS_BROKER_URL (e.g. redis://127.0.0.1:6379/0)"
                )
            if not self.db_url or self.db_url.startswith("sqlite"):
                raise StackError(
                    "MLOPS_EXECUTOR=celery needs a server database for Airflow: set MLOPS_DB_URL "
                    "(e.g. postgresql://postgres@127.0.0.1:5432/airflow)"
                )
            if self.celery_workers < 1:
                raise StackError(f"MLOPS_CELERY_WORKERS={self.celery_workers}: need at least 1")
        for var, url in (
            ("MLOPS_DB_URL", self.db_url),
            ("MLOPS_MLFLOW_DB_URL", self.mlflow_db_url),
            ("MLOPS_BROKER_URL", self.broker_url if self.celery else None),
        ):
            reason = _unreachable(url)
            if reason:
                raise StackError(f"{var}: {reason}")

    def up(
        self, services: tuple[str, ...] | list[str] | None = None, echo: Callable[[str], None] = lambda _: None
    ) -> None:
        """Start what is not running, wait until everything is healthy. Idempotent."""
        wanted = self.service_names if services is None else services
        names = [n for n in self.service_names if n in wanted]
        t0 = time.monotonic()
        with self._lock():
            self._check_shape()
            self._prepare_dirs()
            self.write_env_file()
            self._check_ports(names)
            started: list[str] = []
            svcs = self.services()
            try:
                if "s3" in names:
                    if self._pid("s3") is None:
                        self._spawn(svcs["s3"])
                        started.append("s3")
                    self._wait_healthy(["s3"])
                    self._ensure_bucket()
                    echo(f"s3 ready at {self.s3_url} ({time.monotonic() - t0:.1f}s)")
                if "mlflow" in names and self._pid("mlflow") is None:
                    self._spawn(svcs["mlflow"])
                    started.append("mlflow")
                if "gateway" in names and self._pid("gateway") is None:
                    self._spawn(svcs["gateway"])  # polls MLflow until it answers; /health needs only the process
                    started.append("gateway")
                af = [n for n in names if n.startswith("airflow-")]
                if af and any(self._pid(n) is None for n in af):
                    self._migrate_airflow()
                    for n in af:
                        if self._pid(n) is None:
                            self._spawn(svcs[n])
                            started.append(n)
                rest = [n for n in names if n != "s3"]
                self._wait_healthy(rest)
            except BaseException:
                self._stop(*started)  # all-or-nothing: do not leave half a stack behind
                raise
            echo(f"stack ready in {time.monotonic() - t0:.1f}s")

    def _migrate_airflow(self) -> None:
        """`airflow db migrate`, once per Airflow version (a stamp file avoids the ~15 s on every `up`)."""
        from importlib.metadata import version

        stamp = self.airflow_home / ".migrated"
        want = version("apache-airflow")
        if self.db_url:  # another database needs its own migration
            want += " " + hashlib.sha256(self.db_url.encode()).hexdigest()[:16]
        if stamp.exists() and stamp.read_text().strip() == want:
            return
        log = self.log_path("airflow-db-migrate")
        with open(log, "ab") as fh:
            rc = subprocess.run(
                [str(VENV_BIN / "airflow"), "db", "migrate"],
                check=False,
                env=self.env(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=self.startup_timeout * 2,
            ).returncode
        if rc != 0:
            raise self._fail("airflow-db-migrate", None)
        stamp.write_text(want)

    def _ensure_bucket(self) -> None:
        s3 = self.s3_client()
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if self.bucket not in names:
            s3.create_bucket(Bucket=self.bucket)

    def _stop(self, *names: str) -> None:
        """SIGTERM the services' process groups together, SIGKILL what is left after the grace period."""
        groups = []
        for name in names:
            # If the leader is gone its pid may have been reused: leave survivors to the marker scan in down().
            pid = self._pid(name)
            if pid is not None:
                _signal_group(pid, signal.SIGTERM)
                groups.append(pid)
        deadline = time.monotonic() + self.stop_grace
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            self._reap()
            time.sleep(0.2)
        for g in groups:
            if _group_alive(g):
                _signal_group(g, signal.SIGKILL)
        self._reap()
        for name in names:
            self.pid_path(name).unlink(missing_ok=True)

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    def down(self, echo: Callable[[str], None] = lambda _: None) -> None:
        """Stop every service and verify (via /proc) that no process of this stack is left."""
        with self._lock():
            # Airflow first (its tasks may still write to MLflow/S3 or call the gateway), then the gateway (its
            # shutdown writes the buffered logs to S3), then MLflow, then S3. Pid files name what runs, so
            # workers started in the Celery shape stop even if this call's env lacks it.
            recorded = sorted(p.stem for p in self.run_dir.glob("*.pid")) if self.run_dir.exists() else []
            airflow = [n for n in dict.fromkeys([*self.service_names, *recorded]) if n.startswith("airflow-")]
            for group in (airflow, ["gateway"], ["mlflow"], ["s3"]):
                names = [n for n in group if self._read_pid(n)]
                self._stop(*names)
                for n in names:
                    echo(f"stopped {n}")
            leftovers = self.stray_processes()
            for pid, _why in leftovers:
                _kill(pid, signal.SIGKILL)
            time.sleep(0.3 if leftovers else 0)
            self._reap()
            left = self.stray_processes()
            if left:
                raise StackError(
                    "processes still running after down: " + ", ".join(f"{pid} ({why})" for pid, why in left)
                )

    def stop(self, *names: str, echo: Callable[[str], None] = lambda _: None) -> None:
        """Stop some services (SIGTERM, then SIGKILL after the grace period), e.g. to restart the gateway."""
        with self._lock():
            running = [n for n in names if self._read_pid(n)]
            self._stop(*running)
            for n in running:
                echo(f"stopped {n}")

    def stray_processes(self) -> list[tuple[int, str]]:
        """Processes (not us or our ancestors) started by this stack: marker env var, home in cmdline/cwd."""
        home = str(self.home)
        skip = _ancestors(os.getpid())
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in skip:
                continue
            pid = int(entry.name)
            if _state(pid) in ("Z", "X", None):
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = (entry / "environ").read_bytes().split(b"\0")
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if f"{OWNER_MARKER}={home}".encode() in environ:
                found.append((pid, f"env: {cmdline[:80]}"))
            elif home in cmdline:
                found.append((pid, f"cmdline: {cmdline[:80]}"))
            elif cwd == home or cwd.startswith(home + os.sep):
                found.append((pid, f"cwd: {cmdline[:80]}"))
        return found

    def status(self) -> dict[str, dict]:
        airflow = self.airflow_health()
        ping = self.celery_ping() if self.celery else set()
        out = {}
        for name, svc in self.services().items():
            pid = self._pid(name)
            ok, detail = self._health(name, airflow, ping) if pid else (False, "not running")
            out[name] = ServiceStatus(
                name, pid, svc.port, pid is not None, ok, detail, str(self.log_path(name))
            ).__dict__
        return out

    def is_up(self) -> bool:
        return all(s["healthy"] for s in self.status().values())

    # ---- clients ---------------------------------------------------------------------------------------
    def s3_client(self, connect_timeout: float = 5, retries: int = 3):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name=REGION,
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=self.s3_secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                connect_timeout=connect_timeout,
                read_timeout=60,
                retries={"max_attempts": retries, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def airflow_client(self):
        from ml_ops.local.airflow_client import AirflowClient

        return AirflowClient(self.airflow_url, *self.admin_login)


# ---- small /proc and socket helpers ----------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields after "pid (comm)"; comm may contain spaces


def _state(pid: int) -> str | None:
    f = _stat_fields(pid)
    return f[0] if f else None


def _start_time(pid: int) -> str:
    f = _stat_fields(pid)
    return f[19] if f else "?"  # field 22 of stat: start time in clock ticks (guards against pid reuse)


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f and f[2] == str(pgid) and f[0] not in ("Z", "X"):
                return True
    return False


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 0 and pid not in out:
        out.add(pid)
        f = _stat_fields(pid)
        pid = int(f[1]) if f else 0
    return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_hostname() -> str:
    """Airflow ``[core] hostname_callable`` for Celery workers: the worker's name, so task instances
    show which of several workers on one machine ran them (on separate machines the FQDN does that)."""
    return os.environ.get("MLOPS_WORKER_HOSTNAME") or socket.getfqdn()


def _unreachable(url: str | None) -> str | None:
    """Why the server of a postgresql/redis/mysql URL cannot be reached by TCP, or None."""
    from urllib.parse import urlsplit

    if not url or url.startswith("sqlite"):
        return None
    parts = urlsplit(url.removeprefix("db+"))
    scheme = parts.scheme.split("+")[0]
    port = parts.port or {"postgresql": 5432, "postgres": 5432, "redis": 6379, "mysql": 3306}.get(scheme)
    host = parts.hostname or "localhost"
    if port is None:
        return None
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"{scheme} server at {host}:{port} is not reachable ({exc.strerror or exc})"
    return None


def _http_ok(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERRORISH = re.compile(r"error|exception|fatal|failed|address already in use|permission denied", re.IGNORECASE)


def _last_meaningful_line(log: Path, max_len: int = 240) -> str:
    """The most telling line of the latest run in a log: last error-like line, else last non-empty one."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log written"
    text = text.rsplit("\n==== ", 1)[-1]  # only the most recent start
    lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()[1:]]
    lines = [ln for ln in lines if ln and not ln.startswith(('File "', "^", "~", "Traceback"))]
    if not lines:
        return "process exited without output"
    errors = [ln for ln in lines if _ERRORISH.search(ln)]
    line = (errors or lines)[-1]
    return line if len(line) <= max_len else line[: max_len - 3] + "..."


def _print_status(stack: Stack) -> None:
    print(f"MLOPS_HOME={stack.home}")
    for s in stack.status().values():
        health = "healthy" if s["healthy"] else f"unhealthy ({s['detail']})"
        if not s["running"]:
            health = "stopped"
        print(f"{s['name']:<22} pid={s['pid'] or '-':<8} port={s['port'] or '-':<6} {health:<28} log={s['log']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_ops.local.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--only",
        nargs="*",
        metavar="SERVICE",
        help=f"subset of services (for `up`): {', '.join(SERVICES)}, {WORKER_PREFIX}N",
    )
    args = parser.parse_args(argv)
    stack = Stack.from_env()
    unknown = sorted(set(args.only or ()) - set(stack.service_names))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; this stack has: {', '.join(stack.service_names)}")
    try:
        if args.command == "up":
            stack.up(tuple(args.only) if args.only else None, echo=print)
            print(
                f"airflow: {stack.airflow_url} (login {ADMIN_USER}/{ADMIN_PASSWORD})  mlflow: {stack.mlflow_url}  "
                f"s3: {stack.s3_url}  gateway: {stack.gateway_url}\nenv for the airflow CLI: source {stack.home / 'stack.env'}"
            )
        elif args.command == "down":
            stack.down(echo=print)
            print("stack stopped; no processes left")
        else:
            _print_status(stack)
            return 0 if stack.is_up() else 3
    except StackError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
