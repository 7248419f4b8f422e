"""``make demo``: start the embedded stack, load simulated history, run the fraud pipeline over it
through the real Airflow scheduler, and print where to look.

The simulated calendar ends yesterday, so the scheduled daily run of the pipeline continues it.
History is processed as an Airflow backfill (one run per day, oldest first, one at a time), which
is what a team does when a pipeline goes live on existing data.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import date, datetime, timedelta, timezone

from ml_ops import layout

PIPELINE = "fraud"
DAYS = int(os.environ.get("MLOPS_DEMO_DAYS", "12"))
TRAFFIC_RATE = float(os.environ.get("MLOPS_DEMO_TRAFFIC_RATE", "25"))  # requests/s replayed to the gateway


def load_source(stack, last_day: date, days: int) -> str:
    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.sim import generate_transactions, generate_tumors, load_source

    url = stack.source_db_url
    first = last_day - timedelta(days=days - 1)
    delays = {name: load_pipeline_by_name(name).target.label_delay_days for name in ("fraud", "tumors")}
    load_source(
        url, "transactions", generate_transactions(first, days, rows_per_day=3000, label_delay_days=delays["fraud"])
    )
    load_source(url, "tumors", generate_tumors(first, days, label_delay_days=delays["tumors"]))
    print(f"source: {days} days of transactions and tumours ({first}..{last_day}) in {url}")
    return url


def run_backfill(client, dag_id: str, first: date, last: date, timeout: float = 900) -> list[dict]:
    from ml_ops.local.airflow_client import AirflowApiError

    client.wait_for_dag(dag_id, timeout=120)
    for attempt in range(10):
        try:
            client.backfill(dag_id, first, last)
            break
        except AirflowApiError as exc:
            if exc.status == 503 and attempt < 9:  # SQLite metadata DB busy: transient
                time.sleep(3)
                continue
            if exc.status in (400, 409, 422):  # e.g. every day has a run already (a second `make demo`)
                print(f"  backfill not created ({exc.status}): {exc.body[:200]}; showing the existing runs")
                break
            raise
    client.unpause(dag_id)
    wanted = {(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)}
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in client.dag_runs(dag_id) if (r.get("logical_date") or "")[:10] in wanted]
        for run in sorted(runs, key=lambda r: r["logical_date"]):
            day, state = run["logical_date"][:10], run["state"]
            if state in ("success", "failed") and seen.get(day) != state:
                seen[day] = state
                tis = {t["task_id"]: t["state"] for t in client.task_instances(dag_id, run["dag_run_id"])}
                print(f"  {day}: {state:8s} " + " ".join(f"{k}={v}" for k, v in tis.items()), flush=True)
        if len(seen) == len(wanted):
            return runs
        time.sleep(3)
    raise TimeoutError(f"{dag_id}: {len(seen)} of {len(wanted)} runs finished within {timeout:.0f}s")


def summary(stack, pipeline: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.storage import ObjectStore

    cfg = load_pipeline_by_name(pipeline)
    client = MlflowClient(stack.mlflow_url)
    lines = ["", "=" * 78, f"airflow-mlops demo: pipeline '{pipeline}'", "=" * 78]
    try:
        champion = client.get_model_version_by_alias(pipeline, layout.CHAMPION)
        metrics = client.get_run(champion.run_id).data.metrics
        shown = {
            k: round(v, 4)
            for k, v in sorted(metrics.items())
            if k in ("roc_auc", "pr_auc", "f1", "precision", "recall", "log_loss")
        }
        lines.append(f"champion: {pipeline} version {champion.version} (run {champion.run_id})")
        lines.append(f"  holdout metrics: {shown}")
        lines.append(f"  data window: {champion.tags.get('data_window')}")
    except MlflowException as exc:  # no champion yet is a valid outcome worth saying plainly
        lines.append(f"champion: none yet ({exc.__class__.__name__})")
    store = ObjectStore(stack.s3_client())
    decisions = store.read_jsonl(f"{cfg.prefix()}/decisions/log.jsonl")
    lines.append(f"decisions ({len(decisions)}): {cfg.prefix()}/decisions/log.jsonl")
    for d in decisions[-5:]:
        lines.append(
            f"  v{d.get('challenger_version')} vs champion v{d.get('champion_version')}: "
            f"{'PROMOTED' if d.get('promote') else 'kept champion'} - {d.get('reason')}"
        )
    objects = store.list(f"{cfg.prefix()}/")
    for stage in ("raw", "validation", "features"):
        n = len({u.split("/ds=")[1][:10] for u in objects if f"/{stage}/ds=" in u})
        lines.append(f"{stage:10s} {n:3d} days  {cfg.prefix()}/{stage}/ds=<day>/")
    local = os.path.join(stack.home, "s3", cfg.bucket, "pipelines", pipeline)
    lines += [
        f"files on disk (S3 endpoint's folder): {local}",
        f"  e.g. open {local}/validation/ds=<day>/report.html in a browser",
        "",
        f"Airflow UI : {stack.airflow_url}   login {stack.admin_user} / {stack.admin_password}",
        f"MLflow UI  : {stack.mlflow_url}   (experiment '{pipeline}', model '{pipeline}')",
        f"S3 endpoint: {stack.s3_url}   bucket '{cfg.bucket}'",
        f"Gateway    : {stack.gateway_url}/pipelines/{pipeline}/invocations   (metrics: {stack.gateway_url}/metrics)",
        "The stack keeps running: `make status`, `make down` to stop it.",
    ]
    return "\n".join(lines)


class BackgroundTraffic:
    """Replays the simulator's transactions to the gateway from the moment a champion exists, so canaries
    started during the backfill are judged on live traffic."""

    def __init__(self, stack, cfg, rate: float = TRAFFIC_RATE) -> None:
        import threading

        self.stack, self.cfg, self.rate = stack, cfg, rate
        self.stop = threading.Event()
        self.stats = None
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import httpx
        from mlflow import MlflowClient

        from ml_ops.local.traffic import replay
        from ml_ops.pipeline.registry import current_version
        from ml_ops.storage import ObjectStore

        client = MlflowClient(self.stack.mlflow_url)
        while not self.stop.wait(5):
            if current_version(client, self.cfg.name, layout.CHAMPION) is not None:
                break
        while not self.stop.wait(1):  # the gateway loads the new champion after its next poll
            try:
                status = httpx.get(f"{self.stack.gateway_url}/pipelines", timeout=5).json()["pipelines"]
                if status[self.cfg.name][layout.CHAMPION]["loaded"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        if self.stop.is_set():
            return
        print(
            f"  traffic: replaying transactions to {self.stack.gateway_url} at {self.rate:.0f} requests/s", flush=True
        )
        self.stats = replay(
            self.cfg,
            ObjectStore(self.stack.s3_client()),
            self.stack.gateway_url,
            rate=self.rate,
            duration=24 * 3600,
            label_delay=5.0,
            stop_event=self.stop,
            token=self.stack.gateway_token,  # feedback needs the gateway token by default
        )

    def close(self):
        self.stop.set()
        self.thread.join(timeout=60)
        return self.stats


def wait_for_canaries(client, timeout: float = 3600) -> list[dict]:
    """Wait until no fraud_canary run is queued or running; returns all its runs."""
    dag_id = f"{PIPELINE}_canary"
    deadline = time.monotonic() + timeout
    while True:
        runs = client.dag_runs(dag_id)
        active = [r for r in runs if r["state"] in ("queued", "running")]
        if not active or time.monotonic() > deadline:
            return runs
        time.sleep(5)


def ensure_a_canary(client, stack) -> None:
    """Canaries start on their own when a challenger wins its gate. If none won during the backfill, roll
    out the newest challenger by hand, as a person would from the UI (Params), so the demo shows one."""
    from mlflow import MlflowClient

    from ml_ops.pipeline.registry import current_version

    if any(_rollout(client, run) for run in client.dag_runs(f"{PIPELINE}_canary")):
        return
    mlflow_client = MlflowClient(stack.mlflow_url)
    champion = current_version(mlflow_client, PIPELINE, layout.CHAMPION)
    versions = sorted(int(v.version) for v in mlflow_client.search_model_versions(f"name='{PIPELINE}'"))
    candidates = [v for v in versions if v != champion]
    if not candidates:
        print("no challenger besides the champion: no canary to show")
        return
    version = candidates[-1]
    # It lost its gate, so the rollout must be forced with a reason: the decision log, the version's tags and
    # the alert record it, and the judge (which sees log loss and ROC-AUC on the labels) decides on live traffic.
    reason = "demo: no challenger won its gate during the backfill; showing a canary of the newest version"
    print(
        f"no challenger won its gate during the backfill; rolling out v{version} as a canary by hand "
        f"(fraud_canary, Params version={version}, force=true with a reason: recorded as forced)",
        flush=True,
    )
    client.trigger(f"{PIPELINE}_canary", conf={"version": version, "force": True, "reason": reason})


def _rollout(client, run: dict) -> dict | None:
    """The canary task's outcome, or None for a run that rolled nothing out (failed, or skipped)."""
    from ml_ops.local.airflow_client import AirflowApiError

    if run["state"] != "success":
        return None
    try:
        outcome = client.xcom(f"{PIPELINE}_canary", run["dag_run_id"], "canary")
    except AirflowApiError:
        return None
    return outcome if isinstance(outcome, dict) and "version" in outcome else None


def canary_summary(stack, client) -> list[str]:
    from mlflow import MlflowClient

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.rollout.deployment import read_state, state_uri
    from ml_ops.storage import ObjectStore

    cfg = load_pipeline_by_name(PIPELINE)
    mlflow_client = MlflowClient(stack.mlflow_url)
    lines = [f"canary rollouts ({PIPELINE}_canary, gateway {stack.gateway_url}):"]
    for run in sorted(client.dag_runs(f"{PIPELINE}_canary"), key=lambda r: r.get("run_after") or ""):
        outcome = _rollout(client, run)
        if outcome is None:
            lines.append(f"  {run['dag_run_id']}: {run['state']}, nothing rolled out")
            continue
        tags = mlflow_client.get_model_version(PIPELINE, str(outcome["version"])).tags
        steps = ", ".join(tags[k] for k in sorted(tags) if k.startswith("canary.step"))
        lines.append(
            f"  v{outcome['version']}: {outcome['outcome'].upper()} (judge score {outcome.get('score', 0):.0f})"
            f" - {outcome['reason']}"
        )
        lines.append(f"    steps: {steps}")
    state = read_state(ObjectStore(stack.s3_client()), cfg)
    lines.append(f"  deployment state: {state.status}, canary weight {state.canary_weight:.0%} ({state_uri(cfg)})")
    lines.append(f"  verdicts: MLflow experiment '{PIPELINE}-canary'; prediction logs: {cfg.prefix()}/serving_logs/")
    return lines


def main() -> int:
    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.airflow_client import AirflowClient
    from ml_ops.local.stack import Stack

    started = time.monotonic()
    stack = Stack.from_env()
    stack.up()
    last_day = datetime.now(timezone.utc).date() - timedelta(days=1)
    first_day = last_day - timedelta(days=DAYS - 1)
    load_source(stack, last_day, DAYS)
    client = AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)
    client.wait_for_dag(f"{PIPELINE}_canary", timeout=120)
    client.unpause(f"{PIPELINE}_canary")  # winners hand over to it through the Asset fraud_canary
    traffic = BackgroundTraffic(stack, load_pipeline_by_name(PIPELINE))
    try:
        print(f"running {PIPELINE}_training for {first_day}..{last_day} (Airflow backfill, one day at a time):")
        run_backfill(client, f"{PIPELINE}_training", first_day, last_day)
        wait_for_canaries(client)
        ensure_a_canary(client, stack)
        time.sleep(10)
        print("waiting for the canary rollout (10 → 25 → 50 → 100 % of traffic, judged at every step) ...", flush=True)
        wait_for_canaries(client)
    finally:
        stats = traffic.close()
    print(summary(stack, PIPELINE))
    print("\n".join(canary_summary(stack, client)))
    if stats is not None:
        print(f"  traffic: {stats}")
    print(f"demo finished in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
