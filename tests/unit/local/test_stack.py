"""The embedded stack on its own supervisord, against real processes (rclone S3; MLflow for process trees)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest

from ml_ops.local.stack import OWNER_MARKER, Service, Stack, StackError
from ml_ops.local.supervisor import START_SECONDS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _our_processes(stack: Stack) -> list[int]:
    marker = f"{OWNER_MARKER}={stack.home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def stack(tmp_path):
    st = Stack(
        home=tmp_path / "home",
        s3_port=_free_port(),
        mlflow_port=_free_port(),
        airflow_port=_free_port(),
        gateway_port=_free_port(),
        startup_timeout=60,
        stop_grace=10,
    )
    yield st
    st.down()


def test_s3_roundtrip_including_multipart(stack):
    stack.up(["s3"])
    s3 = stack.s3_client()
    assert "mlops" in {b["Name"] for b in s3.list_buckets()["Buckets"]}  # created on start

    s3.put_object(Bucket="mlops", Key="raw/a.txt", Body=b"hello")
    assert s3.get_object(Bucket="mlops", Key="raw/a.txt")["Body"].read() == b"hello"
    s3.copy_object(Bucket="mlops", Key="raw/b.txt", CopySource={"Bucket": "mlops", "Key": "raw/a.txt"})
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlops", Prefix="raw/")["Contents"]]
    assert keys == ["raw/a.txt", "raw/b.txt"]
    s3.delete_object(Bucket="mlops", Key="raw/a.txt")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlops", Prefix="raw/")["Contents"]]
    assert keys == ["raw/b.txt"]

    # >8 MB through the explicit multipart API (5 MiB minimum part size, as on AWS).
    data = os.urandom(9 * 1024 * 1024 + 123)
    part = 5 * 1024 * 1024
    mpu = s3.create_multipart_upload(Bucket="mlops", Key="big/blob.bin")
    parts = []
    for n, offset in enumerate(range(0, len(data), part), start=1):
        r = s3.upload_part(
            Bucket="mlops",
            Key="big/blob.bin",
            UploadId=mpu["UploadId"],
            PartNumber=n,
            Body=data[offset : offset + part],
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    assert len(parts) == 2
    s3.complete_multipart_upload(
        Bucket="mlops", Key="big/blob.bin", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket="mlops", Key="big/blob.bin")["Body"].read() == data

    # and boto3's managed transfer (what S3Hook/MLflow use) with its default 8 MB threshold
    s3.upload_fileobj(io.BytesIO(data), "mlops", "big/managed.bin")
    out = io.BytesIO()
    s3.download_fileobj("mlops", "big/managed.bin", out)
    assert out.getvalue() == data
    assert (stack.home / "s3" / "mlops" / "big" / "managed.bin").stat().st_size == len(data)


def test_port_taken_by_a_stranger_fails_before_starting_anything(stack):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.airflow_port))
        squatter.listen()
        with pytest.raises(StackError) as err:
            stack.up()
    assert str(err.value) == (
        f"port {stack.airflow_port} (airflow) is already in use by another process; set MLOPS_AIRFLOW_PORT"
    )
    assert _our_processes(stack) == []
    assert not list((stack.home / "run").glob("*.pid")) and not stack.supervisor.running()


def test_up_twice_does_not_duplicate_processes(stack):
    stack.up(["s3"])
    first = _our_processes(stack)
    pid = stack.status()["s3"]["pid"]
    assert len(first) == 1 and first == [pid]

    stack.up(["s3"])  # already healthy: a no-op, and our own port is not "taken"
    assert _our_processes(stack) == first
    assert Stack(home=stack.home, s3_port=stack.s3_port).status()["s3"]["healthy"]  # state is on disk


def test_down_kills_process_trees_and_leaves_nothing(stack):
    # MLflow's server forks a uvicorn worker into its process group: down must take the whole tree.
    stack.up(["s3", "mlflow"])
    procs = _our_processes(stack)
    assert len(procs) >= 3, procs  # rclone + mlflow launcher + uvicorn worker
    status = stack.status()
    assert status["s3"]["healthy"] and status["mlflow"]["healthy"]

    stack.down()
    assert _our_processes(stack) == []
    assert stack.stray_processes() == []
    assert not status["mlflow"]["healthy"] or not stack.status()["mlflow"]["running"]
    stack.down()  # idempotent


def test_a_crashing_service_is_reported_in_one_line(stack, monkeypatch):
    real = Stack.services

    def broken_s3(self):
        svcs = real(self)
        svcs["s3"] = Service(
            "s3", ["sh", "-c", "echo starting; echo 'FATAL: cannot open store'; exit 3"], dict(os.environ), self.s3_port
        )
        return svcs

    monkeypatch.setattr(Stack, "services", broken_s3)
    with pytest.raises(StackError) as err:
        stack.up(["s3"])
    log = stack.home / "logs" / "s3.log"
    assert str(err.value) == f"s3 failed to start: FATAL: cannot open store; log: {log}"
    assert _our_processes(stack) == []
    assert not stack.supervisor.running()  # nothing of the stack runs, so neither does its supervisord


def test_gateway_service_and_its_airflow_connection(stack, monkeypatch):
    monkeypatch.delenv("MLOPS_GATEWAY_TOKEN", raising=False)
    # the stack passes the caller's environment on; what is checked below is that it adds no tracking URI itself
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    gateway = stack.services()["gateway"]
    assert gateway.argv[1:] == ["-m", "ml_ops.serving"] and gateway.port == stack.gateway_port
    env = gateway.env
    assert env["MLFLOW_TRACKING_URI"] == stack.mlflow_url and env["MLOPS_S3_ENDPOINT"] == stack.s3_url
    for name, service in stack.services().items():  # Airflow reaches MLflow only through mlflow_default
        if name.startswith("airflow"):
            assert "MLFLOW_TRACKING_URI" not in service.env, name
            assert "mlflow_default".upper() in " ".join(service.env).upper(), name
    assert env["MLOPS_GATEWAY_PORT"] == str(stack.gateway_port) and env["MLOPS_BUCKET"] == stack.bucket
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (stack.s3_access_key, stack.s3_secret_key)
    token = env["MLOPS_GATEWAY_TOKEN"]
    assert len(token) >= 32 and token == Stack(home=stack.home).gateway_token  # generated once, kept on disk
    conn = json.loads(stack._airflow_vars()["AIRFLOW_CONN_MLOPS_GATEWAY"])
    assert conn == {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": stack.gateway_port,
        "schema": "http",
        "password": token,
    }
    assert stack.gateway_url == f"http://127.0.0.1:{stack.gateway_port}"
    monkeypatch.setenv("MLOPS_GATEWAY_TOKEN", "from-env")
    assert stack.services()["gateway"].env["MLOPS_GATEWAY_TOKEN"] == "from-env"
    # the shutdown order: the gateway stops after Airflow (which calls it) and before MLflow and S3
    assert stack.service_names.index("gateway") > stack.service_names.index("mlflow")


def test_a_home_from_before_the_gateway_keeps_its_airflow_secrets(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    old = {"fernet_key": "f", "jwt_secret": "j", "api_secret_key": "a"}
    (home / "secrets.json").write_text(json.dumps(old))
    secrets = Stack(home=home)._secrets()
    assert {k: secrets[k] for k in old} == old and secrets["gateway_token"]
    assert json.loads((home / "secrets.json").read_text()) == secrets


def test_gateway_port_taken_names_its_variable(stack):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.gateway_port))
        squatter.listen()
        with pytest.raises(StackError) as err:
            stack.up(["gateway"])
    assert str(err.value) == (
        f"port {stack.gateway_port} (gateway) is already in use by another process; set MLOPS_GATEWAY_PORT"
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_stay_off_command_lines_and_out_of_readable_files(stack):
    stack.up(["s3"])
    secret = stack.s3_secret_key.encode()
    for pid in _our_processes(stack) + [stack.supervisor.processes()["s3"].pid]:
        assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert all(secret not in arg.encode() for svc in stack.services().values() for arg in svc.argv)
    assert secret not in stack.supervisor.conf_path.read_bytes()  # the config names launch files instead
    private = [
        stack.supervisor.conf_path,
        stack.supervisor.launch_path("s3"),
        stack.home / "secrets.json",
        stack.home / "stack.env",
        stack.airflow_home / "passwords.json",
        stack.home / "rclone.conf",
    ]
    assert {p.name: _mode(p) for p in private} == {p.name: 0o600 for p in private}
    assert _mode(stack.run_dir) == 0o700
    assert secret in stack.supervisor.launch_path("s3").read_bytes()  # rclone gets it as RCLONE_AUTH_KEY


def test_each_stack_has_its_own_supervisord(stack, tmp_path):
    # A home with a space in a path too long for a unix socket: the socket moves to the temp dir.
    other = Stack(
        home=tmp_path / ("other home " + "x" * 80),
        s3_port=_free_port(),
        startup_timeout=60,
        stop_grace=10,
    )
    assert not str(other.supervisor.socket_path).startswith(str(other.home))
    try:
        stack.up(["s3"])
        other.up(["s3"])
        mine, theirs = stack.supervisor.processes()["s3"].pid, other.supervisor.processes()["s3"].pid
        assert mine != theirs and _our_processes(other) == [theirs]
        other.down()
        assert _our_processes(other) == [] and not other.supervisor.running()
        assert stack.status()["s3"] == {**stack.status()["s3"], "pid": mine, "healthy": True}  # untouched
    finally:
        other.down()


def test_up_refuses_to_run_beside_processes_left_by_a_killed_supervisord(stack):
    stack.up(["s3"])
    rclone = stack.supervisor.processes()["s3"].pid
    sv_pid = int((stack.run_dir / "supervisord.pid").read_text())
    os.kill(sv_pid, signal.SIGKILL)
    while Path(f"/proc/{sv_pid}").exists() and Path(f"/proc/{sv_pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.05)
    with pytest.raises(StackError, match=r"run without its supervisord \(pid \d+.*`mlops stack down` first"):
        stack.up(["s3"])
    assert _our_processes(stack) == [rclone]
    stack.down()  # the /proc scan finds what supervisord can no longer stop
    assert _our_processes(stack) == []


def test_status_shows_supervisord_view_of_each_service(stack):
    assert {s["detail"] for s in stack.status().values()} == {"not running"}
    stack.up(["s3"])
    status = stack.status()
    assert status["s3"]["running"] and status["s3"]["healthy"] and status["s3"]["pid"]
    assert not status["mlflow"]["running"] and status["mlflow"]["detail"] == "not running"
    assert not stack.is_up()


def test_a_home_supervisord_cannot_name_is_refused_in_one_line(tmp_path):
    home = tmp_path / "100%"
    with pytest.raises(StackError, match=r"^supervisord.conf cannot hold '.*100%.*': a path with '%'"):
        Stack(home=home, s3_port=_free_port()).up(["s3"])
    assert not Stack(home=home).supervisor.running()


def test_stop_then_up_again_and_a_later_crash_is_restarted_by_supervisord(stack):
    stack.up(["s3"])
    first = stack.status()["s3"]["pid"]
    stack.stop("s3")
    assert _our_processes(stack) == [] and stack.status()["s3"]["detail"] == "not running"
    stack.up(["s3"])
    second = stack.status()["s3"]["pid"]
    assert second != first and stack.status()["s3"]["healthy"]

    # Past its start window a service that dies unexpectedly is started again (autorestart=unexpected).
    time.sleep(START_SECONDS + 1)
    os.kill(second, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = stack.status()["s3"]
        if status["healthy"] and status["pid"] not in (None, second):
            break
        time.sleep(0.5)
    assert status["healthy"] and status["pid"] not in (None, second), status
