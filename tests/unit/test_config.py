from pathlib import Path

import pytest
import yaml

from ml_ops.config import ConfigError, load_pipeline, pipeline_files

SHIPPED = pipeline_files()


def test_ships_two_pipelines():
    assert {p.stem for p in SHIPPED} >= {"fraud", "tumors"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_pipelines_are_valid(path):
    cfg = load_pipeline(path)
    assert cfg.name == path.stem
    assert cfg.suite_path().is_file()
    assert ":start" in cfg.sql_text()


def _write(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((SHIPPED[0].parent / "fraud.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "change, field",
    [
        ({"promotion__floors": {"roc_auc": "high"}}, "promotion.floors.roc_auc"),
        ({"promotion__floors": {"accuracy_x": 0.5}}, "promotion.floors"),
        ({"training__window_days": 0}, "training.window_days"),
        ({"target__column": None}, "target.column"),
        ({"source__sql": "sql/missing.sql"}, "source.sql"),
        ({"model__estimator": "RandomForest"}, "model.estimator"),
        ({"features__colour": "blue"}, "features.colour"),
        ({"promotion__mode": "yolo"}, "promotion.mode"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path, change, field):
    with pytest.raises(ConfigError) as err:
        load_pipeline(_write(tmp_path, **change))
    assert f"fraud.yaml: {field}" in str(err.value)


def test_sql_must_use_bound_parameters(tmp_path, monkeypatch):
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "bad.sql").write_text("SELECT * FROM transactions WHERE ts >= '{start}'")
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "fraud.json").write_text("{}")
    monkeypatch.setenv("MLOPS_INCLUDE_DIR", str(tmp_path))
    path = _write(tmp_path, source__sql="sql/bad.sql")
    with pytest.raises(ConfigError, match="does not bind"):
        load_pipeline(path)


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_pipeline(path)


def test_check_warns_when_the_connection_cannot_be_resolved_and_keeps_the_static_checks(tmp_path, monkeypatch, capsys):
    from ml_ops.config import main

    raw = yaml.safe_load((SHIPPED[0].parent / "fraud.yaml").read_text())
    raw["source"]["conn_id"] = "nowhere_db"  # neither AIRFLOW_CONN_NOWHERE_DB nor Airflow's metadata DB has it
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE_DB", raising=False)
    assert main([str(tmp_path / "fraud.yaml")]) == 0
    ok, warn, warn_labels = capsys.readouterr().out.splitlines()
    assert ok == "ok    fraud.yaml: pipeline 'fraud', DAG fraud_training"
    assert warn.startswith("warn  fraud.yaml: sql/fraud_extract.sql (pipeline 'fraud', source.sql) not run"), warn
    assert "connection 'nowhere_db' not resolved" in warn and "AIRFLOW_CONN_NOWHERE_DB" in warn
    # fraud's labels table is on the source's connection (no labels.conn_id): not run either
    assert warn_labels.startswith("warn  fraud.yaml: sql/fraud_labels.sql (pipeline 'fraud', labels.sql) not run")
    raw["promotion"]["mode"] = "yolo"  # a static error is still one
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(raw))
    assert main([str(tmp_path / "fraud.yaml")]) == 1
    assert capsys.readouterr().out.startswith("error fraud.yaml: promotion.mode")
