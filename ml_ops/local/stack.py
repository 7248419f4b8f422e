"""Embedded local stack: S3 (rclone), MLflow, the serving gateway and Airflow 3 as real processes under $MLOPS_HOME.

    mlops stack {up,down,status}          (also: python -m ml_ops.local.stack {up,down,status})

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

The stack's own supervisord (ml_ops.local.supervisor) runs every service, with its config, socket and logs
in $MLOPS_HOME. What stays here is ours: which services in which order, their health, and proving after
`down` (via /proc) that no process of the stack is left.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_ops.local import procfs
from ml_ops.local.stack_env import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    AIRFLOW_COMPONENTS,
    OWNER_MARKER,
    REGION,
    REPO,
    SERVICES,
    VENV_BIN,
    WORKER_PREFIX,
    StackConfig,
    worker_hostname,  # Celery workers started before the split name it as ml_ops.local.stack.worker_hostname
)
from ml_ops.local.supervisor import Proc, Service, Supervisor, SupervisorError

# Re-exported: callers import these from ml_ops.local.stack.
__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "OWNER_MARKER",
    "REPO",
    "SERVICES",
    "Service",
    "ServiceStatus",
    "Stack",
    "StackError",
    "main",
    "worker_hostname",
]

HEALTH_KEY = {  # /api/v2/monitor/health section for each Airflow component
    "airflow-api-server": "metadatabase",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}
PORT_VARS = {"s3": "MLOPS_S3_PORT", "mlflow": "MLOPS_MLFLOW_PORT", "gateway": "MLOPS_GATEWAY_PORT"}


class StackError(RuntimeError):
    """A one-line, user-facing reason why the stack could not be started or stopped."""


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    port: int | None
    running: bool
    healthy: bool
    detail: str
    log: str


def _alive(procs: dict[str, Proc], name: str) -> bool:
    return name in procs and procs[name].alive


@dataclass
class Stack(StackConfig):
    """The embedded stack: its services, their health, and up/down/status through its own supervisord."""

    @classmethod
    def from_env(cls) -> Stack:
        return cls()

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.home, self.stop_grace)

    # ---- service definitions -----------------------------------------------------------------------------
    def services(self) -> dict[str, Service]:
        # rclone's keys come from RCLONE_AUTH_KEY (see _s3_env): a secret never goes on a command line.
        s3 = Service(
            "s3",
            [
                str(VENV_BIN / "rclone"),
                "serve",
                "s3",
                str(self.home / "s3"),
                "--addr",
                f"127.0.0.1:{self.s3_port}",
                "--config",
                str(self.home / "rclone.conf"),
                "--log-level",
                "NOTICE",
            ],
            self._s3_env(),
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
        # The processes that fork task processes start with the tasks' libraries imported (ml_ops.airflow.preload).
        preloaded = [sys.executable, "-m", "ml_ops.airflow.preload"] if self.preload else [airflow]
        for comp in AIRFLOW_COMPONENTS:
            argv = [*preloaded, comp] if comp == "scheduler" else [airflow, comp]
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
            # One task at a time per worker, like a small production worker; task logs go to the shared
            # log folder, so no log-serving sidecar (its fixed port 8793 would clash between workers).
            argv = [*preloaded, "celery", "worker", "--celery-hostname", self.celery_hostname(name)]
            argv += ["--concurrency", "1", "--skip-serve-logs"]
            out[name] = Service(name, argv, self._worker_env(name))
        return out

    def _fail(self, name: str, cause: str | None = None, proc: Proc | None = None) -> StackError:
        log = self.log_path(name)
        line = cause or _last_meaningful_line(log)
        if cause is None and proc is not None and line in ("no log written", "process exited without output"):
            line = f"{line} ({proc.state.lower()}: {proc.description})"  # supervisord's reason, e.g. exit status
        return StackError(f"{name} failed to start: {line}; log: {log}")

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
        """Wait until every service is healthy; fail fast if one of its processes exits (or was restarted)."""
        pending = list(names)
        deadline = time.monotonic() + self.startup_timeout
        last: dict[str, str] = {}
        pids = {n: p.pid for n, p in self.supervisor.processes().items()}
        while pending:
            procs = self.supervisor.processes()
            airflow = self.airflow_health() if any(n.startswith("airflow-") for n in pending) else {}
            ping = self.celery_ping() if any(n.startswith(WORKER_PREFIX) for n in pending) else set()
            for name in list(pending):
                proc = procs.get(name)
                if not _alive(procs, name) or proc.pid != pids.get(name):
                    raise self._fail(name, proc=proc)
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
            except SupervisorError as exc:
                raise StackError(str(exc)) from exc
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare_dirs(self) -> None:
        for sub in ("s3", "mlflow", "airflow", "source", "run", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)  # socket, lock and launch files (which hold the services' secrets)
        (self.home / "rclone.conf").touch(mode=0o600)
        self.write_passwords_file()

    def _check_ports(self, names: list[str], procs: dict[str, Proc], svcs: dict[str, Service]) -> None:
        for name in names:
            port = svcs[name].port
            if port is not None and not _alive(procs, name) and not _port_free(port):
                label = "airflow" if name.startswith("airflow") else name
                var = PORT_VARS.get(name, "MLOPS_AIRFLOW_PORT")
                raise StackError(f"port {port} ({label}) is already in use by another process; set {var}")

    def _check_no_orphans(self) -> None:
        """With no supervisord, nothing of this stack may run (e.g. left by a killed supervisord)."""
        orphans = procfs.owned_processes(self.home, OWNER_MARKER, env_only=True)
        if orphans:
            pid, why = orphans[0]
            raise StackError(
                f"{len(orphans)} process(es) of this stack run without its supervisord (pid {pid}, {why}); "
                "stop them with `mlops stack down` first"
            )

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
            sv = self.supervisor
            procs = sv.processes()
            if not sv.running():
                self._check_no_orphans()
            svcs = self.services()
            self._check_ports(names, procs, svcs)
            sv.ensure(list(svcs.values()))
            started: list[str] = []

            def start(*batch: str) -> None:
                for n in batch:
                    if not _alive(procs, n):
                        sv.start(svcs[n])
                        started.append(n)

            try:
                if "s3" in names:
                    start("s3")
                    self._wait_healthy(["s3"])
                    self._ensure_bucket()
                    echo(f"s3 ready at {self.s3_url} ({time.monotonic() - t0:.1f}s)")
                # the gateway polls MLflow until it answers; its /health needs only the process
                start(*[n for n in ("mlflow", "gateway") if n in names])
                af = [n for n in names if n.startswith("airflow-")]
                if any(not _alive(procs, n) for n in af):
                    self._migrate_airflow()
                    start(*af)
                self._wait_healthy([n for n in names if n != "s3"])
            except BaseException:
                sv.stop(started)  # all-or-nothing: do not leave half a stack behind
                if not any(p.alive for p in sv.processes().values()):
                    sv.shutdown()
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
        # An embedded (SQLite) database starts as a copy of one migrated once per Airflow version: it holds
        # only the schema (users live in the simple auth manager's file, connections in the environment),
        # and migrating takes 15-40 s, paid by every test stack and every fresh `make demo`.
        db = self.airflow_home / "airflow.db"
        template = Path(tempfile.gettempdir()) / f"ml_ops_airflow_{want.replace(' ', '_')}.db"
        if not self.db_url and not db.exists() and template.exists():
            shutil.copy(template, db)
            stamp.write_text(want)
            return
        log = self.log_path("airflow-db-migrate")
        with open(log, "ab") as fh:
            fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: airflow db migrate\n".encode())
            fh.flush()
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
            raise self._fail("airflow-db-migrate")
        stamp.write_text(want)
        if not self.db_url and not template.exists():
            staging = template.with_suffix(f".{os.getpid()}")
            shutil.copy(db, staging)
            os.replace(staging, template)  # atomic: a concurrent stack sees no half-copied template

    def _ensure_bucket(self) -> None:
        s3 = self.s3_client()
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if self.bucket not in names:
            s3.create_bucket(Bucket=self.bucket)

    def _stop(self, *names: str) -> list[str]:
        """Stop services together (SIGTERM, SIGKILL after the grace period); returns those that ran."""
        return self.supervisor.stop(list(names))

    def down(self, echo: Callable[[str], None] = lambda _: None) -> None:
        """Stop every service and supervisord, then verify (via /proc) that no process of this stack is left."""
        with self._lock():
            sv = self.supervisor
            known = list(sv.processes())  # what supervisord runs, whatever shape this call's env describes
            # Airflow first (its tasks may still write to MLflow/S3 or call the gateway), then the gateway (its
            # shutdown writes the buffered logs to S3), then MLflow, then S3.
            airflow = [n for n in known if n.startswith("airflow-") or n not in ("gateway", "mlflow", "s3")]
            for group in (airflow, ["gateway"], ["mlflow"], ["s3"]):
                for n in self._stop(*[n for n in group if n in known]):
                    echo(f"stopped {n}")
            sv.shutdown()
            leftovers = self.stray_processes()
            for pid, _why in leftovers:
                procfs.kill(pid, signal.SIGKILL)
            time.sleep(0.3 if leftovers else 0)
            left = self.stray_processes()
            if left:
                raise StackError(
                    "processes still running after down: " + ", ".join(f"{pid} ({why})" for pid, why in left)
                )

    def stop(self, *names: str, echo: Callable[[str], None] = lambda _: None) -> None:
        """Stop some services (SIGTERM, then SIGKILL after the grace period), e.g. to restart the gateway."""
        with self._lock():
            for n in self._stop(*names):
                echo(f"stopped {n}")

    def stray_processes(self) -> list[tuple[int, str]]:
        """Processes (not us or our ancestors) of this stack: marker env var, home in cmdline or cwd."""
        return procfs.owned_processes(self.home, OWNER_MARKER)

    def status(self) -> dict[str, dict]:
        procs = self.supervisor.processes()
        svcs = self.services()
        airflow = self.airflow_health() if any(_alive(procs, n) for n in svcs if n in HEALTH_KEY) else {}
        ping = self.celery_ping() if any(_alive(procs, n) for n in self.worker_names) else set()
        out = {}
        for name, svc in svcs.items():
            proc = procs.get(name)
            if _alive(procs, name):
                ok, detail = self._health(name, airflow, ping)
            elif proc is None or proc.state == "STOPPED":
                ok, detail = False, "not running"
            else:  # supervisord knows why: EXITED (exit status 1), FATAL (exited too quickly), ...
                ok, detail = False, f"{proc.state.lower()}: {proc.description}"
            pid = proc.pid if _alive(procs, name) else None
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


# ---- small socket, HTTP and log helpers ------------------------------------------------------------------
def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    text = text.rsplit("\n==== ", 1)[-1]  # only the most recent start (ml_ops/local/launch.py writes the header)
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
            health = "stopped" if s["detail"] == "not running" else s["detail"]
        print(f"{s['name']:<22} pid={s['pid'] or '-':<8} port={s['port'] or '-':<6} {health:<28} log={s['log']}")


def main(argv: list[str] | None = None, prog: str = "python -m ml_ops.local.stack") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
                f"s3: {stack.s3_url}  gateway: {stack.gateway_url}\n"
                f"env for the airflow CLI: source {stack.home / 'stack.env'}\n"
                f"processes: {VENV_BIN / 'supervisorctl'} -c {stack.supervisor.conf_path} status"
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
