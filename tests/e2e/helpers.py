from __future__ import annotations

from datetime import date, datetime, timezone


def run_day(airflow, dag_id: str, day: date, conf: dict | None = None, timeout: float = 600) -> dict:
    """Trigger ``dag_id`` for ``day`` through the REST API and wait for it to finish."""
    airflow.wait_for_dag(dag_id, timeout=180)
    airflow.unpause(dag_id)
    logical = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    run_id = airflow.trigger(dag_id, logical_date=logical, conf=conf or {}, run_id=f"e2e__{day.isoformat()}__{datetime.now().timestamp():.0f}")
    state = airflow.wait_for_run(dag_id, run_id, timeout=timeout)
    tasks = {t["task_id"]: t["state"] for t in airflow.task_instances(dag_id, run_id)}
    return {"run_id": run_id, "state": state, "tasks": tasks}


def source_counts(db_url: str, table: str, ts_column: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT substr({ts_column}, 1, 10), count(*) FROM {table} GROUP BY 1")).all()
    return {day: n for day, n in rows}
