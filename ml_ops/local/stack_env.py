"""What a local stack is (home, ports, shape) and what its processes see: secrets and environments.

Everything here is computed, nothing is started: ``ml_ops.local.stack`` starts processes with these
environments. Secrets travel only through environments and 0600 files, never through a command line.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import secrets
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # rclone, mlflow, airflow and supervisord live next to the interpreter
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
REGION = "us-east-1"
# Set only in the environment of processes we spawn: lets the /proc scan find our descendants without
# matching a user's shell that merely sourced stack.env.
OWNER_MARKER = "MLOPS_STACK_OWNER"

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICES = ("s3", "mlflow", "gateway") + tuple(f"airflow-{c}" for c in AIRFLOW_COMPONENTS)
WORKER_PREFIX = "airflow-worker-"  # service names of Celery workers: airflow-worker-1, airflow-worker-2, ...
# rclone's S3 does not need the newer flexible checksums; clients only send them when required
_CHECKSUMS = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}


def write_private(path: Path, text: str) -> Path:
    """Write a file only its owner can read, atomically (no moment where it exists with wider modes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # O_CREAT's mode does not apply to a tmp file left by a crash
        fh.write(text)
    tmp.replace(path)
    return path


def worker_hostname() -> str:
    """Airflow ``[core] hostname_callable`` for Celery workers: the worker's name, so task instances
    show which of several workers on one machine ran them (on separate machines the FQDN does that)."""
    return os.environ.get("MLOPS_WORKER_HOSTNAME") or socket.getfqdn()


@dataclass
class StackConfig:
    """Where a stack lives and how it is shaped; each field falls back to its MLOPS_* variable."""

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
    preload: bool | None = None  # task libraries imported before Airflow forks tasks (ml_ops.airflow.preload)

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
        if self.preload is None:  # MLOPS_PRELOAD=0: every task imports its libraries itself (Airflow's default)
            self.preload = e.get("MLOPS_PRELOAD", "1") != "0"

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
    def source_db_url(self) -> str:
        """SQLAlchemy URL of the embedded source database (connection ``source_db``)."""
        return f"sqlite:///{self.source_db}"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

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

    # ---- shape -----------------------------------------------------------------------------------------
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
    def admin_login(self) -> tuple[str, str]:
        return ADMIN_USER, ADMIN_PASSWORD

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def admin_password(self) -> str:
        return ADMIN_PASSWORD

    # ---- secrets ---------------------------------------------------------------------------------------
    @property
    def gateway_token(self) -> str:
        """Bearer token of the gateway's admin routes: MLOPS_GATEWAY_TOKEN, else generated once."""
        return os.environ.get("MLOPS_GATEWAY_TOKEN") or self._secrets()["gateway_token"]

    @property
    def privacy_key(self) -> str:
        """HMAC key of the personal columns in prediction logs (ml_ops.privacy): MLOPS_PRIVACY_KEY, else
        generated once. Losing it breaks erasure by hash of what was logged before: it is kept with the home."""
        return os.environ.get("MLOPS_PRIVACY_KEY") or self._secrets()["privacy_key"]

    def _secrets(self) -> dict[str, str]:
        """Fernet key, JWT/API secrets, the gateway token and the privacy key, generated once and shared by every
        component. A home from before a secret existed keeps what it has and gains the missing ones."""
        path = self.home / "secrets.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        generate = {
            "fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "jwt_secret": lambda: secrets.token_urlsafe(32),
            "api_secret_key": lambda: secrets.token_urlsafe(32),
            "gateway_token": lambda: secrets.token_urlsafe(32),
            "privacy_key": lambda: secrets.token_urlsafe(32),
        }
        missing = [k for k in generate if k not in known]
        if not missing:
            return known
        values = {**known, **{k: generate[k]() for k in missing}}
        write_private(path, json.dumps(values))
        return values

    # ---- environments ----------------------------------------------------------------------------------
    def _airflow_vars(self) -> dict[str, str]:
        """The variables this stack defines for Airflow (what stack.env exports)."""
        s = self._secrets()
        af = self.airflow_home
        identity = {  # always ours: they decide which stack a process belongs to
            "AIRFLOW_HOME": str(af),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            # SQLite serialises writers; two triggers at once made the API server's write wait past the driver's
            # default 5 s lock timeout and answer 500. 30 s lets concurrent writers queue instead.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url or f"sqlite:///{af / 'airflow.db'}?timeout=30",
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
            # No MLFLOW_TRACKING_URI: tasks reach MLflow only through the mlflow_default connection, as in
            # docker-compose.yaml (exporting it here once hid code that relied on the global tracking URI).
            "MLOPS_GATEWAY_URL": self.gateway_url,
            "MLOPS_PRIVACY_KEY": self.privacy_key,  # the erasure DAG matches the logs' keyed hashes with it
            # the erasure DAG also forgets the entity in the gateway's online store
            "MLOPS_ONLINE_STORE": os.environ.get("MLOPS_ONLINE_STORE") or self.online_store_url,
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
            **_CHECKSUMS,
        }
        return {**tuning, **{k: os.environ[k] for k in tuning if k in os.environ}, **identity}

    def env(self) -> dict[str, str]:
        """Full environment for Airflow processes: the caller's environment plus the stack's variables."""
        return {**os.environ, **self._airflow_vars()}

    def _worker_env(self, name: str) -> dict[str, str]:
        # Task instances record where they ran (TI.hostname): on one machine that is the worker's name.
        return {
            **self.env(),
            "MLOPS_WORKER_HOSTNAME": self.celery_hostname(name),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "ml_ops.local.stack_env.worker_hostname",
        }

    def _s3_env(self) -> dict[str, str]:
        # rclone reads every flag from RCLONE_<FLAG>; --auth-key is a CSV list of "access,secret" pairs.
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="").writerow(
            [f"{self.s3_access_key},{self.s3_secret_key}"]
        )
        return {**os.environ, "RCLONE_AUTH_KEY": buf.getvalue()}

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
            **_CHECKSUMS,
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
            "MLOPS_PRIVACY_KEY": self.privacy_key,  # personal columns are logged as keyed hashes
            # raw-event requests: per-entity state in an embedded SQLite file unless a store is given (Redis)
            "MLOPS_ONLINE_STORE": os.environ.get("MLOPS_ONLINE_STORE") or self.online_store_url,
            **_CHECKSUMS,
        }

    @property
    def online_store_url(self) -> str:
        """The embedded stack's online feature store (ml_ops.features.store): a SQLite file under the home."""
        return f"sqlite:///{self.home / 'online' / 'features.db'}"

    def write_env_file(self) -> Path:
        """stack.env: `source` it to run `airflow` CLI commands against this stack (it holds secrets: 0600)."""
        lines = ["# source this file to run `airflow` CLI commands against the local stack"]
        lines.append(f'export PATH={shlex.quote(str(VENV_BIN))}:"$PATH"')
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self._airflow_vars().items())]
        return write_private(self.home / "stack.env", "\n".join(lines) + "\n")

    def write_passwords_file(self) -> Path:
        """The simple auth manager's users and passwords (0600; kept if an admin changed it)."""
        path = self.airflow_home / "passwords.json"
        if path.exists():
            path.chmod(0o600)  # homes from before kept it world-readable
            return path
        return write_private(path, json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
