"""Authoring a stranger's pipeline (the loans world of test_categoricals, not a shipped one): derived time features
only when declared, and ``mlops config check`` running the SQL on its connection the way extract runs it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient

from ml_ops import config
from ml_ops.interval import DayInterval
from ml_ops.local.sim import load_source
from ml_ops.pipeline import steps
from ml_ops.pipeline.train import load_model_version
from ml_ops.scoring import model_input
from ml_ops.serving.errors import RequestError
from ml_ops.serving.schema import InputSchema, check_columns, convert, parse_json, table_from_payload
from tests.mlflow_store import fresh_store
from tests.unit.pipeline.test_categoricals import D0, DAYS, LOANS_SQL, LOANS_SUITE, LOANS_YAML, loans

DECLARED = ["amount", "income", "grade", "purpose"]
TIME_PARTS = ["hour_of_day", "day_of_week"]


@pytest.fixture(scope="module")
def include(tmp_path_factory):
    """The loans include dir, its source (a small SQLite database with a labels table) as the Airflow connection
    ``loans_db`` (AIRFLOW_CONN_LOANS_DB), MLOPS_INCLUDE_DIR pointing at it."""
    tmp = tmp_path_factory.mktemp("authoring")
    include = tmp / "include"
    for sub in ("pipelines", "sql", "expectations"):
        (include / sub).mkdir(parents=True)
    (include / "pipelines" / "loans.yaml").write_text(LOANS_YAML)
    (include / "sql" / "loans_extract.sql").write_text(LOANS_SQL)
    (include / "expectations" / "loans.json").write_text(json.dumps(LOANS_SUITE))
    db = tmp / "loans.db"
    df = loans(DAYS, rows_per_day=120)
    load_source(f"sqlite:///{db}", "loans", df, timestamp_column="applied_at")
    labels = df[["loan_id", "defaulted"]].assign(labelled_at=df["label_available_at"])
    labels.to_sql("loan_labels", sa.create_engine(f"sqlite:///{db}"), index=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_INCLUDE_DIR", str(include))
    mp.setenv("AIRFLOW_CONN_LOANS_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    yield include
    mp.undo()


def _yaml(include, tmp_path, sql: str | None = None, **changes) -> str:
    """The loans YAML with ``section__key`` changes (and another SQL file, written under include/sql/), in tmp_path."""
    raw = yaml.safe_load(LOANS_YAML)
    if sql is not None:
        (include / "sql" / f"{tmp_path.name}.sql").write_text(sql)
        raw["source"]["sql"] = f"sql/{tmp_path.name}.sql"
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    path = tmp_path / "loans.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# --------------------------------------------------------------------------- derived time features


@pytest.fixture(scope="module", params=[[], TIME_PARTS], ids=["time_parts_off", "time_parts_on"])
def trained(request, include, s3_store, tmp_path_factory):
    """The loans pipeline with features.time_parts as given, through the steps the training DAG runs (extract,
    features, train; no validation) on its small source, under its own pipeline name in the session's S3."""
    parts = request.param
    raw = yaml.safe_load(LOANS_YAML)
    raw["features"]["time_parts"] = parts
    raw["name"] = f"loans_authoring_{len(parts)}"
    cfg = config.Pipeline.model_validate(raw)
    tmp = tmp_path_factory.mktemp(cfg.name)
    tracking_uri = fresh_store(tmp)
    MlflowClient(tracking_uri).create_experiment(cfg.name, artifact_location=str(tmp / "artifacts"))
    engine, _ = config.source_engine(cfg.source.conn_id)
    for i in range(DAYS):
        day = DayInterval.for_day(D0 + timedelta(days=i))
        steps.extract_step(cfg, s3_store, day, engine)
        steps.features_step(cfg, s3_store, day)
    result = steps.train_step(cfg, s3_store, day, tracking_uri, run_id="test_authoring")
    client = MlflowClient(tracking_uri)
    return {
        "parts": parts,
        "model": load_model_version(tracking_uri, cfg.name, result["version"]),
        "run": client.get_run(result["run_id"]).data,
        "version": client.get_model_version(cfg.name, str(result["version"])),
        "features": s3_store.read_parquet(steps.uri(cfg, "features", day.ds)),
    }


def test_time_features_are_model_inputs_only_when_declared(trained):
    inputs = {spec.name: spec.type.name for spec in trained["model"].metadata.get_input_schema().inputs}
    assert list(inputs) == ["amount", "income", *trained["parts"], "grade", "purpose"]
    assert all(inputs[part] == "double" for part in trained["parts"])  # as every numeric input: nulls allowed
    assert set(TIME_PARTS) & set(trained["features"].columns) == set(trained["parts"])


def test_the_mlflow_run_and_version_name_the_derived_features(trained):
    named = ",".join(trained["parts"]) or "none"
    assert trained["run"].tags["derived_features"] == named
    assert trained["run"].params["tag.derived_features"] == named
    assert trained["version"].tags["derived_features"] == named
    assert json.loads(trained["run"].params["numeric"]) == ["amount", "income", *trained["parts"]]


def test_clients_are_asked_only_for_declared_inputs(trained):
    model, parts = trained["model"], trained["parts"]
    assert list(model_input(model, trained["features"]).columns) == ["amount", "income", *parts, "grade", "purpose"]
    schema = InputSchema.from_mlflow(model.metadata.get_input_schema())
    row = {"amount": 5000.0, "income": 40000.0, "grade": 3, "purpose": "car"}

    def gateway(record: dict) -> list[str]:  # the gateway's column check, then its conversion
        table = table_from_payload(parse_json(json.dumps({"dataframe_records": [record]}).encode()))
        check_columns(table, [schema], [], "loans")
        return sorted(convert(table, schema))

    if not parts:
        assert gateway(row) == sorted(DECLARED)
        return
    with pytest.raises(RequestError, match=r"missing column\(s\) \['hour_of_day', 'day_of_week'\]"):
        gateway(row)
    assert gateway({**row, "hour_of_day": 9, "day_of_week": 0}) == sorted([*DECLARED, *TIME_PARTS])


@pytest.mark.parametrize("parts", [[], TIME_PARTS], ids=["time_parts_off", "time_parts_on"])
def test_the_training_dag_docs_list_the_derived_features(include, parts):
    from ml_ops.airflow.dag_factory import build_training_dag

    raw = yaml.safe_load(LOANS_YAML)
    raw["features"]["time_parts"] = parts
    doc = build_training_dag(config.Pipeline.model_validate({**raw, "name": "loans"})).doc_md
    listed = ", ".join(f"`{p}`" for p in parts) or "none"
    assert f"the model inputs are the declared columns plus these derived ones: {listed}." in doc


# --------------------------------------------------------------------------- mlops config check


def _check(capsys, *argv) -> tuple[int, str]:
    rc = config.main(list(argv))
    return rc, capsys.readouterr().out


def test_a_good_query_passes(include, capsys):
    rc, out = _check(capsys, str(include / "pipelines" / "loans.yaml"))
    assert rc == 0, out
    assert "ok    loans.yaml: sql/loans_extract.sql (pipeline 'loans', source.sql) runs on connection 'loans_db'" in out
    assert "returns every column the YAML names" in out


def test_sql_comments_naming_the_parameters_pass(include, tmp_path, capsys):
    # LOANS_SQL names :start/:end in its leading comment; a trailing one must not swallow the check's wrapper
    sql = LOANS_SQL + "-- half-open: [:start, :end);\n"
    rc, out = _check(capsys, _yaml(include, tmp_path, sql=sql))
    assert rc == 0 and "returns every column the YAML names" in out, out


def test_a_column_the_source_lacks_fails_naming_file_and_column(include, tmp_path, capsys):
    sql = LOANS_SQL.replace("amount, income,", "amount, income, salary,")
    rc, out = _check(capsys, _yaml(include, tmp_path, sql=sql))
    assert rc == 1, out
    (line,) = [x for x in out.splitlines() if x.startswith("error")]
    assert f"sql/{tmp_path.name}.sql (pipeline 'loans', source.sql)" in line
    assert "no such column: salary" in line


def test_a_yaml_column_the_query_does_not_return_fails_naming_the_field(include, tmp_path, capsys):
    numeric = ["amount", "income", "salary"]
    rc, out = _check(capsys, _yaml(include, tmp_path, features__numeric=numeric, target__column="default_flag"))
    assert rc == 1, out
    errors = [x for x in out.splitlines() if x.startswith("error")]
    assert len(errors) == 2, out
    assert errors[0].startswith("error loans.yaml: features.numeric: column(s) ['salary'] not returned by ")
    assert errors[1].startswith("error loans.yaml: target.column: column(s) ['default_flag'] not returned by ")
    assert "sql/loans_extract.sql (pipeline 'loans', source.sql)" in errors[0]


def test_the_labels_query_is_checked_too(include, tmp_path, capsys):
    (include / "sql" / "loan_labels.sql").write_text(
        "SELECT loan_id, defaulted, labelled_at AS known_at FROM loan_labels "
        "WHERE labelled_at >= :start AND labelled_at < :end"
    )
    rc, out = _check(capsys, _yaml(include, tmp_path, labels__sql="sql/loan_labels.sql"))
    assert rc == 1, out
    assert "error loans.yaml: labels.labelled_at_column: column(s) ['labelled_at'] not returned by " in out
    assert "sql/loan_labels.sql (pipeline 'loans', labels.sql)" in out
    assert "ok    loans.yaml: sql/loans_extract.sql" in out  # the source row need not carry the label then


def test_offline_skips_the_source(include, tmp_path, capsys):
    sql = LOANS_SQL.replace("amount, income,", "amount, income, salary,")
    rc, out = _check(capsys, "--offline", _yaml(include, tmp_path, sql=sql))
    assert rc == 0 and out.splitlines() == ["ok    loans.yaml: pipeline 'loans', DAG loans_training"], out


def test_a_drifted_column_the_yaml_does_not_list_fails_validation():
    """Issue 15, item 5, on the loans pipeline (its YAML lists no stats_columns): one day's income multiplied by
    1.5 fails the mean check for income, because the statistics checks cover every numeric column the day has;
    an untouched day passes."""
    from ml_ops.pipeline.validate import validate_frame

    frames = loans(DAYS)
    days = [g.reset_index(drop=True) for _, g in frames.groupby(frames["applied_at"].dt.date)]
    history, today = days[:-1], days[-1]
    assert validate_frame(today, LOANS_SUITE, history=history).success

    drifted = today.assign(income=today["income"] * 1.5)
    result = validate_frame(drifted, LOANS_SUITE, history=history)
    assert not result.success
    failed = {(f.expectation_type, f.column) for f in result.failures}
    assert ("stats_mean_vs_recent", "income") in failed, result.failures
    assert {c for _, c in failed} == {"income"}, result.failures
