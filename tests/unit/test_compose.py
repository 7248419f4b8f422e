"""docker-compose.yaml without a Docker engine: the Compose Specification schema, and cross-checks
against what the DAGs use (connections, bucket), .env.example, depends_on and health checks.

tests/data/compose-spec.json is the Compose Specification's JSON schema (compose-spec/compose-spec,
``schema/compose-spec.json``), vendored unchanged from the ecs-composex 1.1.9 wheel on PyPI
(``ecs_composex/specs/compose-spec.json``, sha256 a85a0e55...b92d).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from ml_ops.config import load_pipeline, pipeline_files

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; "$$" escapes a literal "$"
VAR = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
CONN_TYPES = {"aws_default": "aws", "mlflow_default": "http", "source_db": "postgres", "smtp_default": "smtp"}


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return yaml.safe_load(raw)  # resolves the x-airflow-common anchors and << merges as compose does


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    out = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        value, op = env.get(m["name"]), m["op"]
        if op in (":-",) and not value or op == "-" and value is None:
            return m["arg"]
        if value is None or (op == ":?" and not value):
            raise KeyError(f"${{{m['name']}}} is not set")
        return value

    return VAR.sub(sub, text).replace("$$", "$")


def airflow_services(compose: dict) -> dict[str, dict]:
    return {
        n: s
        for n, s in compose["services"].items()
        if str((s.get("command") or [""])[0]).startswith("airflow") or n == "airflow-init"
    }


def test_schema_is_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft201909Validator.check_schema(schema)


def test_compose_file_matches_the_compose_specification(compose):
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_check_can_fail(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["intervall"] = "10s"  # a typo compose would reject
    broken["services"]["airflow-worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert len(list(validator.iter_errors(broken))) >= 2


def test_production_shape(compose):
    services = compose["services"]
    expected = {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "mlflow",
        "mailpit",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    assert expected <= set(services), expected - set(services)
    for name, svc in airflow_services(compose).items():
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags", name
        assert "MLOPS_SCHEDULES" not in env, name  # schedules stay on in production
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env, name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name
    worker = services["airflow-worker"]
    # `--scale airflow-worker=N` needs no fixed name and no host port
    assert "container_name" not in worker and "ports" not in worker
    # Airflow's own CLI, started with the tasks' libraries imported (forked tasks inherit them)
    preloaded = ["python", "-m", "ml_ops.airflow.preload"]
    assert worker["command"] == [*preloaded, "celery", "worker"]
    assert services["airflow-scheduler"]["command"] == [*preloaded, "scheduler"]


def test_airflow_services_define_every_connection_the_dags_use(compose, env_example):
    pipelines = [load_pipeline(p) for p in pipeline_files()]
    assert pipelines
    used = set()
    for cfg in pipelines:
        used |= {cfg.source.conn_id, cfg.aws_conn_id, cfg.mlflow_conn_id, cfg.alerts.email_conn_id}
        if cfg.alerts.slack_conn_id:
            used.add(cfg.alerts.slack_conn_id)
    services = set(compose["services"])
    for name, svc in airflow_services(compose).items():
        env = svc["environment"]
        missing = sorted(c for c in used if f"AIRFLOW_CONN_{c.upper()}" not in env)
        assert not missing, f"{name}: no AIRFLOW_CONN_* for {missing}"
        for conn_id, conn_type in CONN_TYPES.items():
            if conn_id not in used:
                continue
            conn = json.loads(interpolate(env[f"AIRFLOW_CONN_{conn_id.upper()}"], env_example))
            assert conn["conn_type"] == conn_type, (name, conn_id)
            host = conn.get("host") or conn["extra"]["endpoint_url"].split("//")[1].split(":")[0]
            assert host in services, f"{name}: {conn_id} points at {host!r}, not a compose service"
        for cfg in pipelines:
            assert interpolate(env["MLOPS_BUCKET"], {}) == cfg.bucket, name


def test_bucket_is_created_and_holds_mlflow_artifacts(compose):
    services = compose["services"]
    bucket = interpolate(services["airflow-scheduler"]["environment"]["MLOPS_BUCKET"], {})
    assert interpolate(services["minio-init"]["environment"]["MLOPS_BUCKET"], {}) == bucket
    assert 'mc mb --ignore-existing "local/$$MLOPS_BUCKET"' in services["minio-init"]["command"][0]
    mlflow_cmd = [interpolate(a, {"MLFLOW_DB_PASSWORD": "x"}) for a in services["mlflow"]["command"]]
    assert f"--artifacts-destination=s3://{bucket}/mlflow" in mlflow_cmd and "--serve-artifacts" in mlflow_cmd
    assert any(a.startswith("--backend-store-uri=postgresql") for a in mlflow_cmd)


def test_postgres_creates_the_three_databases(compose):
    script = compose["configs"]["postgres-databases"]["content"]
    for db in ("airflow", "mlflow", "source"):
        assert f'"{db}:$$' in script
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")


def test_depends_on_targets_exist_and_are_checked(compose):
    services = compose["services"]
    for name, svc in services.items():
        for target, spec in (svc.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
                assert services[target].get("restart") == "no", f"{target} is a one-shot job"


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        if svc.get("restart") != "no":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
            assert svc.get("depends_on") or name in {"postgres", "redis", "minio", "mailpit"}, name


def test_env_example_defines_every_variable_without_a_default(raw, env_example):
    required = {m["name"] for m in VAR.finditer(raw) if m["op"] not in (":-", "-")}
    missing = sorted(required - set(env_example))
    assert not missing, f".env.example lacks {missing}"
    # a default-less variable that is empty in .env.example would start a broken stack
    assert not [k for k in required if not env_example[k]]
    interpolate(raw, env_example)  # and the whole file interpolates with it


def documented_variables() -> dict[str, str]:
    """Every ``NAME=value`` line of .env.example, set or commented out (``# NAME=default``: optional)."""
    line = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
    return {m["name"]: m["value"] for m in map(line.match, (REPO / ".env.example").read_text().splitlines()) if m}


def test_every_variable_the_compose_file_reads_is_documented_in_env_example(raw):
    documented = documented_variables()
    used = {m["name"] for m in VAR.finditer(raw)}
    missing = sorted(used - documented.keys())
    assert not missing, f".env.example does not document {missing}"
    # an optional one shown commented out shows the compose file's default (one default per variable)
    env_lines = (REPO / ".env.example").read_text().splitlines()
    for name in used:
        defaults = {m["arg"] for m in VAR.finditer(raw) if m["name"] == name and m["op"] in (":-", "-")}
        assert len(defaults) <= 1, f"${{{name}}} has different defaults: {defaults}"
        if any(re.match(rf"^#\s*{name}=", line) for line in env_lines):
            assert defaults == {documented[name]}, f".env.example shows {name}={documented[name]}, compose: {defaults}"


def test_minio_encrypts_every_object_and_the_pipelines_require_it(raw, compose, env_example):
    """SSE-S3 on MinIO: its built-in KMS gets one static key from .env (required: the stack does not start
    without one), the bucket encrypts by default (MLflow's artifacts are written without an SSE header), and
    Airflow and the gateway request AES256 on every write, so a write MinIO cannot encrypt fails."""
    from ml_ops.storage import sse_from_env

    services = compose["services"]
    minio_env = services["minio"]["environment"]
    assert re.fullmatch(r"\$\{MINIO_KMS_SECRET_KEY:\?[^}]+\}", minio_env["MINIO_KMS_SECRET_KEY"])
    with pytest.raises(KeyError, match="MINIO_KMS_SECRET_KEY"):
        interpolate(minio_env["MINIO_KMS_SECRET_KEY"], {})
    # MinIO refuses to start with more than one kind of KMS configured (KES, MinIO KMS, static key)
    assert not [k for k in minio_env if k.startswith(("MINIO_KMS_KES_", "MINIO_KMS_SERVER", "MINIO_KMS_API_KEY"))]
    # "<key name>:<base64 of 32 bytes>", the form MinIO's built-in KMS parses; the recipe makes one
    name, _, secret = env_example["MINIO_KMS_SECRET_KEY"].partition(":")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name) and secret
    example = (REPO / ".env.example").read_text()
    assert f'echo "{name}:$(openssl rand -base64 32)"' in example

    init = services["minio-init"]["command"][0]
    assert 'mc encrypt set sse-s3 "local/$$MLOPS_BUCKET"' in init
    assert init.index("mc mb ") < init.index("mc encrypt set ")
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"

    for name, svc in {**airflow_services(compose), "gateway": services["gateway"]}.items():
        env = svc["environment"]
        for given in ({}, env_example):  # no .env value, and .env copied from .env.example
            mode = interpolate(env["MLOPS_S3_SSE"], given)
            assert sse_from_env({"MLOPS_S3_SSE": mode}) == ("AES256", {"ServerSideEncryption": "AES256"}), name
        assert "MLOPS_S3_SSE_KMS_KEY_ID" in env, name


def test_secrets_only_come_from_env(compose):
    secretish = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$")
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secretish.search(key) and not key.endswith("_FILE") and value is not None:
                assert "${" in str(value), f"{name}.{key} is hard-coded; put it in .env"


def test_image_is_built_from_the_lock():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile and "COPY pyproject.toml uv.lock" in dockerfile
    assert "pip install" not in dockerfile


def test_lock_provides_the_celery_executor():
    """CeleryExecutor lives in apache-airflow-providers-celery; the image installs only the lock."""
    lock = (REPO / "uv.lock").read_text()
    assert 'name = "apache-airflow-providers-celery"' in lock, (
        "add apache-airflow-providers-celery to pyproject.toml dependencies and re-lock"
    )


def test_gateway_replicas_share_one_online_store_apart_from_celerys_broker(compose):
    services = compose["services"]
    store = interpolate(services["gateway"]["environment"]["MLOPS_ONLINE_STORE"], {})
    broker = services["airflow-scheduler"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    assert store.startswith("redis://redis:6379/") and store.rsplit("/", 1)[1] != broker.rsplit("/", 1)[1]
    # Airflow's erasure DAG forgets a person in the same store
    assert interpolate(services["airflow-scheduler"]["environment"]["MLOPS_ONLINE_STORE"], {}) == store
    assert "redis" in services["gateway"]["depends_on"]
