"""CPU and wall time of real DAG runs with and without the scheduler's preload (ml_ops.airflow.preload).

Run: .venv/bin/python bench/bench_task_preload.py [--days 4] [--rounds 1]
Writes bench/RESULTS_task_preload.md.

For each mode (preload on, then off = Airflow's default: every task imports its libraries after the fork),
and each round: a fresh embedded stack (LocalExecutor, SQLite, MLflow, S3) in a temp home on free ports,
the tumors simulator's days loaded into its source, the ``tumors_training`` DAG triggered for each day in
turn through the REST API (extract, validate, features; training from the day the window exists). Measured
from the first trigger to the last run's end: wall time, and the CPU time of every process under the stack's
supervisord (user + system, including reaped children: the task processes), so the other load on the machine
does not count, only what the stack itself spent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.helpers import free_port  # noqa: E402 - after the repo is on sys.path

D0 = date(2026, 3, 1)
DAG = "tumors_training"


def tree_cpu(root: int) -> float:
    """CPU seconds (user+system, own and reaped children) of every process below ``root``."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[tuple[int, list[str]]]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(pid), fields))
    total, todo = 0.0, [root]
    while todo:
        for pid, fields in children.get(todo.pop(), []):
            total += sum(int(x) for x in fields[11:15]) / tick
            todo.append(pid)
    return total


def one_round(preload: bool, days: int) -> dict:
    from ml_ops.local.airflow_client import AirflowClient
    from ml_ops.local.sim import generate_tumors, load_source
    from ml_ops.local.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="mlops-bench-preload-"))
    os.environ["MLOPS_SCHEDULES"] = "off"
    stack = Stack(
        home=home,
        s3_port=free_port(),
        mlflow_port=free_port(),
        airflow_port=free_port(),
        gateway_port=free_port(),
        preload=preload,
    )
    stack.up()
    try:
        supervisord = int((home / "run" / "supervisord.pid").read_text())
        airflow = AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)
        load_source(
            stack.source_db_url, "tumors", generate_tumors(D0, days, rows_per_day=150, seed=3, label_delay_days=1)
        )
        airflow.wait_for_dag(DAG, timeout=180)
        airflow.unpause(DAG)
        time.sleep(15)  # let the scheduler settle after start (its own imports are not a task's cost)
        cpu0, t0 = tree_cpu(supervisord), time.monotonic()
        states = []
        for i in range(days):
            day = D0 + timedelta(days=i)
            run_id = airflow.trigger(
                DAG, logical_date=datetime(day.year, day.month, day.day, tzinfo=timezone.utc), run_id=f"bench{i}"
            )
            states.append(airflow.wait_for_run(DAG, run_id, timeout=900))
        wall, cpu = time.monotonic() - t0, tree_cpu(supervisord) - cpu0
        tasks = sum(1 for i in range(days) for t in airflow.task_instances(DAG, f"bench{i}") if t["state"] == "success")
    finally:
        stack.down()
    assert states == ["success"] * days, states
    return {"preload": preload, "wall_s": wall, "cpu_s": cpu, "tasks": tasks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    results = []
    for _ in range(args.rounds):
        for preload in (True, False):
            results.append(one_round(preload, args.days))
            print(json.dumps(results[-1]), flush=True)
    rows = []
    for preload in (True, False):
        mine = [r for r in results if r["preload"] is preload]
        wall = statistics.median(r["wall_s"] for r in mine)
        cpu = statistics.median(r["cpu_s"] for r in mine)
        tasks = mine[0]["tasks"]
        rows.append(
            f"| {'on (ml_ops.airflow.preload)' if preload else 'off (Airflow default)'} | {wall:.0f} | {cpu:.1f} "
            f"| {tasks} | {cpu / tasks:.2f} |"
        )
    load = os.getloadavg()
    text = f"""# Task preload: DAG runs with the tasks' libraries imported before Airflow forks them

`bench/bench_task_preload.py --days {args.days} --rounds {args.rounds}` ({time.strftime("%Y-%m-%d")},
{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average at the end {load[0]:.1f}: other work ran
on the machine, which inflates wall time; the CPU column counts only the stack's own processes).

{args.days} days of the `tumors_training` DAG, one after another, on a fresh embedded stack per mode (LocalExecutor,
SQLite, MLflow, S3). Median of {args.rounds} round(s).

| scheduler | wall s | CPU s (stack) | tasks run | CPU s per task |
|---|---|---|---|---|
{chr(10).join(rows)}

Without the preload every task process imports pandas, scikit-learn, MLflow, Great Expectations or Evidently
after Airflow forks it (`great_expectations` alone takes ~6 s of CPU to import here). The preload
(`python -m ml_ops.airflow.preload scheduler`, the embedded stack's default; `MLOPS_PRELOAD=0` turns it off)
imports them once in the scheduler before its LocalExecutor workers are forked, so every task inherits them.
The Celery workers of the production-shaped stack start the same way.
"""
    (REPO / "bench" / "RESULTS_task_preload.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
