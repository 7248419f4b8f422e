"""The `mlops` command line: each subcommand reaches its module's own main with the rest of the line."""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import sqlalchemy as sa

from ml_ops import cli

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_console_script_is_mlops():
    (script,) = [e for e in entry_points(group="console_scripts") if e.value == "ml_ops.cli:main"]
    assert script.name == "mlops"


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("config", "pipeline", "stack", "demo", "traffic", "sim"))


def test_config_check_validates_the_files_given_or_all(capsys, tmp_path):
    # --offline: the static checks only (the live check of the SQL: tests/unit/pipeline/test_authoring.py)
    assert cli.main(["config", "check", "--offline", str(REPO / "include" / "pipelines" / "fraud.yaml")]) == 0
    assert capsys.readouterr().out == "ok    fraud.yaml: pipeline 'fraud', DAG fraud_training\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\n")
    assert cli.main(["config", "check", str(bad), "--offline"]) == 1
    assert "error" in capsys.readouterr().out
    assert cli.main(["config", "check", "--offline"]) == 0  # every shipped pipeline
    assert "tumors.yaml" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["config", "check", "--help"])  # the module's own parser
    assert exc.value.code == 0 and "--offline" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["config", "check", "--online"])
    assert exc.value.code == 2 and "usage: mlops config check" in capsys.readouterr().err


def test_options_after_the_subcommand_reach_the_module_parser_in_order(capsys, tmp_path):
    db = tmp_path / "source.db"
    argv = ["sim", "tumors", "--db", f"sqlite:///{db}", "--start", "2024-01-01", "--days", "2", "--rows-per-day", "5"]
    assert cli.main(argv) == 0
    assert "loaded 10 rows into tumors" in capsys.readouterr().out
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tumors")).scalar() == 10
    with pytest.raises(SystemExit) as exc:
        cli.main(["traffic", "--help"])  # the module's own help, not a copy
    assert exc.value.code == 0 and "--label-delay" in capsys.readouterr().out


def test_stack_status_of_a_stack_that_is_not_running(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    for var in ("MLOPS_S3_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_AIRFLOW_PORT", "MLOPS_GATEWAY_PORT"):
        monkeypatch.setenv(var, str(_free_port()))
    assert cli.main(["stack", "status"]) == 3  # not up
    out = capsys.readouterr().out
    assert f"MLOPS_HOME={tmp_path / 'home'}" in out and out.count(" stopped ") == 7
    with pytest.raises(SystemExit) as exc:
        cli.main(["stack", "sideways"])
    assert exc.value.code == 2 and "usage: mlops stack" in capsys.readouterr().err


def test_demo_takes_no_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--fast"])
    assert exc.value.code == 2 and "takes no arguments" in capsys.readouterr().err


def test_pipeline_dry_run_reaches_its_module_and_refuses_what_cannot_train(capsys, tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        cli.main(["pipeline", "dry-run", "--help"])  # the module's own parser
    assert exc.value.code == 0 and "--days" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["pipeline"])
    assert exc.value.code == 2 and "usage: mlops pipeline" in capsys.readouterr().err
    # too few days for the fraud YAML's training window (6 + 2 + 8), refused before touching anything
    assert cli.main(["pipeline", "dry-run", "fraud", "--days", "15", "--end", "2026-01-31"]) == 2
    err = capsys.readouterr().err
    assert "--days 15 is too few to train" in err and "training.window_days 6" in err and "--days 16" in err
    assert cli.main(["pipeline", "dry-run", "nope", "--days", "10"]) == 2
    assert "no pipeline 'nope'" in capsys.readouterr().err
    # no AIRFLOW_CONN_SOURCE_DB and no embedded source database: the message says how to give one
    monkeypatch.delenv("AIRFLOW_CONN_SOURCE_DB", raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    assert cli.main(["pipeline", "dry-run", "fraud", "--days", "16"]) == 2
    err = capsys.readouterr().err
    assert "no source for connection 'source_db': set AIRFLOW_CONN_SOURCE_DB" in err, err


def test_python_dash_m_entry_points_still_work():
    for module in (
        "ml_ops.cli",
        "ml_ops.config",
        "ml_ops.local.stack",
        "ml_ops.local.traffic",
        "ml_ops.local.sim",
        "ml_ops.pipeline.dry_run",
    ):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), (module, proc.stderr[-500:])
