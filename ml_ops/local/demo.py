"""``make demo``: the whole loop of the fraud pipeline, by itself, on the embedded stack.

The simulated world: card transactions for the days up to yesterday (M), with a concept change on day C
(fraud switches from card-not-present takeover to small-amount card testing), and their labels in their own
table (``transaction_labels``: chargebacks days to weeks late, legitimate transactions confirmed after 7
days), which fraud.yaml's ``labels:`` section reads. The champion was trained before the change. Then
everything runs through the real Airflow scheduler, with no manual trigger of training or canary:

1. the monitoring DAG's nightly run for M (a backfill of reports over the last days, so the quality chart
   shows the days before and after the change) writes drift reports to S3 and metrics to MLflow; the
   quality alarm fires on the days whose labels have matured since the change and requests a retrain of M
   (Asset ``fraud_retrain``);
2. that Asset event starts the training DAG for M: its window holds days after the change, its holdout too,
   so the new challenger beats the champion significantly and ``announce_canary`` emits Asset ``fraud_canary``;
3. the canary DAG starts from that Asset and rolls the challenger out step by step on fresh traffic (days
   after M from the same simulated world, labels posted back after the simulator's delay) and promotes it.

The history the loop builds on (raw, validation, features and labels partitions of the days up to M and the
first champion) is made in-process with the pipeline's own step functions, as the end-to-end tests do: seconds
instead of a backfill of one Airflow run per day.

Demo-only settings: the stack runs with ``MLOPS_SCHEDULES=assets`` (clock schedules off, so the demo's
chain is the only thing that runs; Asset-triggered DAGs react) and an include/ copy whose fraud.yaml has a
faster canary (shorter steps sized for the demo's traffic); training, gate and monitoring settings are
fraud.yaml's. ``MLOPS_DEMO_ROWS_PER_DAY`` (3000) and ``MLOPS_DEMO_TRAFFIC_RATE`` (30 requests/s) tune it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from ml_ops import layout

PIPELINE = "fraud"
ROWS_PER_DAY = int(os.environ.get("MLOPS_DEMO_ROWS_PER_DAY", "3000"))
TRAFFIC_RATE = float(os.environ.get("MLOPS_DEMO_TRAFFIC_RATE", "30"))  # fresh events/s sent to the gateway
# a chargeback the simulated world delivers after 2 days reaches the gateway after ~6 s, the confirmation of a
# legitimate transaction (7 days) after ~21 s
LABEL_SECONDS_PER_DAY = 3.0
LABELS_TABLE = "transaction_labels"  # fraud.yaml's labels: sql reads it (include/sql/fraud_labels.sql)
SEED, CUSTOMERS = 7, 2000  # the simulated world (ml_ops.local.sim.generate_transactions)
POST_CHANGE_TRAINING_DAYS = 2  # days after the change in the retrain's training window
# The demo's fraud.yaml: the canary paced for ~30 requests/s of demo traffic (~2.5 % fraud), everything else
# as shipped. (Production steps are 2 minutes or more with 200 requests per side.)
DEMO_CANARY = {
    "steps: [10, 25, 50, 100]": "steps: [25, 50, 100]",
    "step_minutes: 2 ": "step_minutes: 1 ",
    "min_requests: 200 ": "min_requests: 100 ",
    "  max_extensions: 3": "  max_extensions: 3\n  min_labels: 60\n  min_per_class: 8",
}
DEMO_ENV = {
    "MLOPS_SCHEDULES": "assets",  # no clock schedules: the chain below is all that runs; Assets still trigger
    "MLOPS_GATEWAY_POLL_SECONDS": "2",  # the gateway picks up a new split within 2 s
    "MLOPS_GATEWAY_FLUSH_SECONDS": "5",
}


class Clock:
    """Seconds since the demo started, for the summary's timeline."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def now(self) -> str:
        s = time.monotonic() - self.t0
        return f"{int(s // 60):02d}:{int(s % 60):02d}"

    def say(self, text: str) -> None:
        self.events.append((time.monotonic() - self.t0, text))
        print(f"[{self.now()}] {text}", flush=True)


# --------------------------------------------------------------------------- the calendar


class Calendar:
    """The days of the scenario, from the pipeline's training settings (label delay d, window w, holdout h):
    the retrain for M trains on [M-d-h-w+1, M-d-h] and holds out [M-d-h+1, M-d]; the change C puts
    POST_CHANGE_TRAINING_DAYS of that window after it; the champion was trained for T, whose holdout ends
    the day before C; the history starts with T's training window."""

    def __init__(self, cfg, last: date) -> None:
        d, w, h = cfg.target.label_delay_days, cfg.training.window_days, cfg.training.holdout_days
        self.last = last  # M: yesterday, the monitoring night
        self.change = last - timedelta(days=d + h + POST_CHANGE_TRAINING_DAYS - 1)
        self.champion_day = self.change - timedelta(days=1 - d)  # T: its holdout ends at C - 1
        self.first = self.champion_day - timedelta(days=d + h + w - 1)  # the first features day
        # extracted days before it: a full per-customer lookback, so no feature of a modelled day is a warm-up value
        self.warmup = self.first - timedelta(days=cfg.features.lookback_days if cfg.features.entity_column else 0)
        self.monitor_from = self.champion_day - timedelta(days=1)  # two nights before the change's labels matured

    @property
    def days(self) -> list[date]:
        """The extracted days, oldest first."""
        return [self.warmup + timedelta(days=i) for i in range((self.last - self.warmup).days + 1)]


def world(cal: Calendar):
    from ml_ops.local.sim import ConceptChange
    from ml_ops.local.traffic import World

    return World(seed=SEED, n_customers=CUSTOMERS, rows_per_day=ROWS_PER_DAY, events=(ConceptChange(cal.change),))


# --------------------------------------------------------------------------- setup


def demo_include(home: Path) -> Path:
    """include/ copied under the stack's home, with the demo's canary pace in fraud.yaml."""
    from ml_ops.config import include_dir

    target = home / "demo-include"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(include_dir(), target)
    fraud = target / "pipelines" / f"{PIPELINE}.yaml"
    text = fraud.read_text()
    for old, new in DEMO_CANARY.items():
        if old not in text:
            raise RuntimeError(f"{fraud}: the demo cannot set its canary pace, {old.strip()!r} not found")
        text = text.replace(old, new, 1)
    fraud.write_text(text)
    return target


def start_stack(clock: Clock):
    """The embedded stack with the demo's settings (a stack already up is restarted with them)."""
    from ml_ops.local.stack import Stack

    stack = Stack.from_env()
    # The demo is an entry point: what its stack's processes see is set here, before they start.
    os.environ.update({k: v for k, v in DEMO_ENV.items() if k not in os.environ or k == "MLOPS_SCHEDULES"})
    os.environ["MLOPS_INCLUDE_DIR"] = str(demo_include(stack.home))
    if stack.is_up():
        clock.say("the stack is up: restarting it with the demo's settings (schedules off, Assets on)")
        stack.down()
    stack.up(echo=lambda line: clock.say(f"stack: {line}"))
    return stack


def load_history(stack, cfg, cal: Calendar, clock: Clock) -> int:
    """The source database (transactions with the change, their labels in their own table, tumours), the
    pipeline's partitions up to M (labels joined as of T's end for the champion, then as of M's end) and the
    champion trained for T; returns the champion's version."""
    import sqlalchemy as sa
    from mlflow import MlflowClient

    from ml_ops.interval import DayInterval
    from ml_ops.local.sim import generate_labels, generate_transactions, generate_tumors, load_source
    from ml_ops.local.sim.transactions import LABEL_IN_ROW
    from ml_ops.pipeline.registry import promote
    from ml_ops.pipeline.steps import extract_step, features_step, labels_step, train_step, validate_step
    from ml_ops.storage import ObjectStore

    w = world(cal)
    url = stack.source_db_url
    days = len(cal.days)
    rows = generate_transactions(
        cal.warmup,
        days,
        rows_per_day=w.rows_per_day,
        n_customers=w.n_customers,
        seed=w.seed,
        label_delay_days=cfg.target.label_delay_days,
        events=w.events,
    )
    # The transactions carry no label; chargebacks (and confirmations of legitimate transactions) go to their
    # own table with the simulator's delays, as fraud.yaml's labels: section reads them.
    labels = generate_labels(rows, w.seed)
    load_source(url, "transactions", rows.drop(columns=list(LABEL_IN_ROW)), labels_table=LABELS_TABLE, labels=labels)
    load_source(url, "tumors", generate_tumors(cal.warmup, days, label_delay_days=1))
    clock.say(
        f"source: {len(rows)} card transactions of {days} days ({cal.warmup}..{cal.last}), fraud rate "
        f"{rows['is_fraud'].mean():.1%}; concept change on {cal.change} (fraud turns to small-amount card testing); "
        f"{len(labels)} labels in {LABELS_TABLE} (chargebacks 1-5 days late, a tail of weeks; legitimate "
        "transactions confirmed after 7 days)"
    )
    store = ObjectStore(stack.s3_client())
    engine = sa.create_engine(url)
    try:
        for day in cal.days:
            interval = DayInterval.for_day(day)
            extract_step(cfg, store, interval, engine)
            validate_step(cfg, store, interval)
            if day >= cal.first:
                features_step(cfg, store, interval)
        # the labels task of T's training run (labels known by T's end), then of M's (for the monitoring nights)
        labels_step(cfg, store, DayInterval.for_day(cal.champion_day), engine)
        trained = train_step(cfg, store, DayInterval.for_day(cal.champion_day), stack.mlflow_url, run_id="demo-history")
        joined = labels_step(cfg, store, DayInterval.for_day(cal.last), engine)
    finally:
        engine.dispose()
    clock.say(
        f"history: raw and validation partitions of {cal.warmup}..{cal.last}, features of {cal.first}..{cal.last}, "
        f"labels joined as of {cal.last}'s end ({joined['labelled']} rows labelled, {joined['corrected']} corrected; "
        f"{joined['unmatched']} unmatched: the warm-up days' labels, which have no features partition) "
        f"({cfg.prefix()}/)"
    )
    client = MlflowClient(stack.mlflow_url)
    promote(client, cfg.name, trained["version"], reason="demo: the champion before the change", by="demo")
    version = client.get_model_version(cfg.name, str(trained["version"]))
    clock.say(
        f"champion: v{trained['version']} trained for {cal.champion_day} ({version.tags.get('data_window')}), "
        f"holdout ROC-AUC {trained['metrics'].get('roc_auc', float('nan')):.3f}"
    )
    return int(trained["version"])


class BackgroundTraffic:
    """Fresh events of the world (days after M) sent to the gateway from the moment it serves the champion,
    their labels posted back after the simulator's delay (LABEL_SECONDS_PER_DAY per simulated day)."""

    def __init__(self, stack, cfg, w, clock: Clock, rate: float = TRAFFIC_RATE) -> None:
        self.stack, self.cfg, self.world, self.clock, self.rate = stack, cfg, w, clock, rate
        self.stop = threading.Event()
        self.stats = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import httpx

        from ml_ops.local.traffic import send_traffic
        from ml_ops.storage import ObjectStore

        while not self.stop.wait(1):  # the gateway loads the champion after its next poll
            try:
                status = httpx.get(f"{self.stack.gateway_url}/pipelines", timeout=5).json()["pipelines"]
                if status[self.cfg.name][layout.CHAMPION]["loaded"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        if self.stop.is_set():
            return
        self.clock.say(
            f"traffic: fresh events (days after the last extracted day) to {self.stack.gateway_url} at "
            f"{self.rate:.0f}/s; labels posted back {LABEL_SECONDS_PER_DAY:g} s per simulated day of delay"
        )
        try:
            self.stats = send_traffic(
                self.cfg,
                ObjectStore(self.stack.s3_client()),
                self.stack.gateway_url,
                rate=self.rate,
                duration=24 * 3600,
                label_delay=LABEL_SECONDS_PER_DAY,
                stop_event=self.stop,
                token=self.stack.gateway_token,  # feedback needs the gateway token by default
                world=self.world,
            )
        except BaseException as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
            self.error = exc

    def close(self):
        self.stop.set()
        self.thread.join(timeout=60)
        return self.stats


# --------------------------------------------------------------------------- following the chain


def asset_events(client, source_dag_id: str) -> list[dict]:
    """Asset events emitted by a DAG's tasks, oldest first (GET /assets/events)."""
    page = client.request("GET", "/assets/events", params={"source_dag_id": source_dag_id, "limit": 100})
    return sorted(page.get("asset_events", []), key=lambda e: e.get("timestamp") or "")


def wait_new_run(client, dag_id: str, known: set[str], timeout: float, clock: Clock, what: str) -> dict:
    """The first run of ``dag_id`` not in ``known`` (started by the scheduler), waited for until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [r for r in client.dag_runs(dag_id) if r["dag_run_id"] not in known]
        if new:
            run = sorted(new, key=lambda r: r.get("run_after") or "")[0]
            clock.say(f"{what}: {dag_id} run {run['dag_run_id']} ({run.get('run_type')}) started by the scheduler")
            remaining = max(60.0, deadline - time.monotonic())
            state = client.wait_for_run(dag_id, run["dag_run_id"], timeout=remaining, poll=3)
            return {**client.get_run(dag_id, run["dag_run_id"]), "state": state}
        time.sleep(2)
    raise TimeoutError(f"no new {dag_id} run within {timeout:.0f}s ({what})")


def tasks_line(client, dag_id: str, run_id: str) -> str:
    tis = client.task_instances(dag_id, run_id)
    return " ".join(f"{t['task_id']}={t['state']}" for t in sorted(tis, key=lambda t: t.get("start_date") or "~"))


def monitoring_lines(store, cfg, cal: Calendar) -> list[str]:
    lines = []
    day = cal.monitor_from
    while day <= cal.last:
        uri = layout.partition(cfg.prefix(), layout.DRIFT, day.isoformat(), layout.RESULT_FILE)
        if store.exists(uri):
            r = store.read_json(uri)
            q = r.get("quality", {})
            m = q.get("metrics", {})
            auc = m.get("roc_auc")
            ref = q.get("reference_auc")
            kinds = [k for k in ("drift", "quality") if r.get(f"{k}_alarm")]
            drifted = [c["name"] for c in r.get("columns", []) if c.get("drifted")]
            lines.append(
                f"    {day}: {'ALARM (' + ' + '.join(kinds) + ')' if kinds else 'quiet':22s} "
                f"ROC-AUC {auc if auc is None else f'{auc:.3f}'} on the labels of {','.join(q.get('labels_days', [])) or '-'}"
                f" (champion's holdout {ref if ref is None else f'{ref:.3f}'})"
            )
            if drifted:
                lines.append(f"        drifted: {', '.join(drifted)}")
            for reason in q.get("reasons", [])[:2]:
                lines.append(f"        {reason}")
        day += timedelta(days=1)
    return lines


def decision_lines(store, cfg, version: int | None) -> list[str]:
    decisions = [
        d for d in store.read_jsonl(layout.decision_log(cfg.prefix())) if d.get("challenger_version") == version
    ]
    if not decisions:
        return ["  gate: no decision recorded"]
    d = decisions[-1]
    b = d.get("bootstrap") or {}
    champion = d.get("champion_metrics") or {}
    challenger = d.get("challenger_metrics") or {}
    metric = b.get("metric", "roc_auc")
    lines = [
        f"  gate: v{version} vs champion v{d.get('champion_version')}: "
        f"{'WON' if d.get('promote') else 'lost'} - {d.get('reason')}",
        f"    {metric} {challenger.get(metric, float('nan')):.4f} vs {champion.get(metric, float('nan')):.4f}; "
        f"pr_auc {challenger.get('pr_auc', float('nan')):.4f} vs {champion.get('pr_auc', float('nan')):.4f}",
    ]
    if b:
        lines.append(
            f"    difference {b['diff']:+.4f}, {b.get('confidence', 0.95):.0%} bootstrap CI "
            f"[{b['ci_low']:+.4f}, {b['ci_high']:+.4f}] ({b.get('n')} resamples): "
            + ("significant" if b["ci_low"] > 0 else "not significant")
        )
    return lines


def canary_lines(stack, cfg, client, run: dict | None) -> list[str]:
    """The canary's outcome and each step's judged metrics (its MLflow run's analysis/step*.json)."""
    import json
    import tempfile

    from mlflow import MlflowClient

    from ml_ops.rollout.deployment import read_state, state_uri
    from ml_ops.storage import ObjectStore

    if run is None:
        return ["  canary: none started"]
    outcome = None
    try:
        outcome = client.xcom(f"{PIPELINE}_canary", run["dag_run_id"], "canary")
    except Exception:  # noqa: BLE001 - a failed run has no outcome
        outcome = None
    if not isinstance(outcome, dict) or "version" not in outcome:
        return [f"  canary run {run['dag_run_id']}: {run['state']}, no outcome"]
    mc = MlflowClient(stack.mlflow_url)
    tags = mc.get_model_version(PIPELINE, str(outcome["version"])).tags
    lines = [
        f"  canary v{outcome['version']}: {outcome['outcome'].upper()} at step {outcome.get('step')} "
        f"(judge score {outcome.get('score', 0):.0f}){' FORCED' if outcome.get('forced') else ''} - {outcome['reason']}"
    ]
    run_id = tags.get("canary.mlflow_run_id")
    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                folder = Path(mc.download_artifacts(run_id, "analysis", tmp))
            except Exception as exc:  # noqa: BLE001
                return [*lines, f"    (step analyses not readable: {exc})"]
            for path in sorted(folder.glob("step*.json"), key=lambda p: [int(x) for x in p.stem[4:].split("_")]):
                v = json.loads(path.read_text())
                step, ext = path.stem[4:].split("_")
                lines.append(
                    f"    step {step}{f' (extension {ext})' if ext != '0' else ''}: {v['outcome']}, score {v['score']:.0f}"
                )
                for m in v.get("metrics", []):
                    if m["verdict"] == "nodata":
                        lines.append(f"      {m['name']:12s} no data yet ({m['reason'][:140]})")
                        continue
                    pos = (
                        f", positives {m['positives_canary']}/{m['positives_champion']}"
                        if m.get("positives_canary") is not None
                        else ""
                    )
                    lines.append(
                        f"      {m['name']:12s} {m['verdict']:5s} canary {m['canary_value']:.4g} vs champion "
                        f"{m['champion_value']:.4g} (n {m['n_canary']}/{m['n_champion']}{pos}, p {m['p_value']:.3g})"
                    )
    state = read_state(ObjectStore(stack.s3_client()), cfg)
    lines.append(f"    deployment state: {state.status}, canary weight {state.canary_weight:.0%} ({state_uri(cfg)})")
    return lines


def where_to_look(stack, cfg, cal: Calendar) -> list[str]:
    local = os.path.join(stack.home, "s3", cfg.bucket, "pipelines", cfg.name)
    return [
        "",
        "Where to look:",
        f"  drift reports : {cfg.prefix()}/drift/ds=<day>/report.html  (on disk: {local}/drift/)",
        f"  quality chart : MLflow experiment '{layout.monitoring_experiment(cfg.name)}' (metric quality_roc_auc "
        "and friends, one step per day)",
        f"  gate decisions: {layout.decision_log(cfg.prefix())}; MLflow experiment '{cfg.name}'",
        f"  canary        : MLflow experiment '{cfg.name}-canary'; model '{cfg.name}' version tags canary.*",
        f"  serving logs  : {cfg.prefix()}/serving_logs/ds=<day>/",
        "",
        f"Airflow UI : {stack.airflow_url}   login {stack.admin_user} / {stack.admin_password}",
        f"MLflow UI  : {stack.mlflow_url}",
        f"S3 endpoint: {stack.s3_url}   bucket '{cfg.bucket}'",
        f"Gateway    : {stack.gateway_url}/pipelines/{cfg.name}/invocations   (metrics: {stack.gateway_url}/metrics)",
        "The stack keeps running with the demo's settings (clock schedules off): `make down` to stop it,",
        "then `make up` for the normal schedules.",
    ]


# --------------------------------------------------------------------------- main


def main() -> int:
    from mlflow import MlflowClient

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.airflow_client import AirflowClient
    from ml_ops.storage import ObjectStore

    clock = Clock()
    stack = start_stack(clock)
    cfg = load_pipeline_by_name(PIPELINE)  # the demo's include/ (MLOPS_INCLUDE_DIR)
    cal = Calendar(cfg, datetime.now(timezone.utc).date() - timedelta(days=1))
    airflow = AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)
    store = ObjectStore(stack.s3_client())
    champion = load_history(stack, cfg, cal, clock)
    for dag in ("training", "canary", "monitoring"):
        airflow.wait_for_dag(f"{PIPELINE}_{dag}", timeout=180)
        airflow.unpause(f"{PIPELINE}_{dag}")  # a paused DAG gets no Asset-triggered runs
    known = {d: {r["dag_run_id"] for r in airflow.dag_runs(f"{PIPELINE}_{d}")} for d in ("training", "canary")}
    traffic = BackgroundTraffic(stack, cfg, world(cal), clock)
    monitoring = training = canary = None
    try:
        clock.say(
            f"monitoring: the nightly run for {cal.last}, with a backfill of reports from {cal.monitor_from} "
            "(each day judged on the labels matured by its end)"
        )
        run_id = airflow.trigger(
            f"{PIPELINE}_monitoring",
            logical_date=datetime.combine(cal.last, datetime.min.time(), tzinfo=timezone.utc),
            conf={"start_date": cal.monitor_from.isoformat(), "end_date": cal.last.isoformat()},
            run_id=f"demo_nightly__{cal.last}__{int(time.time())}",
        )
        state = airflow.wait_for_run(f"{PIPELINE}_monitoring", run_id, timeout=900, poll=3)
        monitoring = {"run_id": run_id, "state": state, "tasks": tasks_line(airflow, f"{PIPELINE}_monitoring", run_id)}
        clock.say(f"monitoring: {state} ({monitoring['tasks']})")
        for line in monitoring_lines(store, cfg, cal):
            print(line, flush=True)
        training = wait_new_run(
            airflow, f"{PIPELINE}_training", known["training"], 600, clock, "retrain requested by the alarm"
        )
        training["tasks"] = tasks_line(airflow, f"{PIPELINE}_training", training["dag_run_id"])
        clock.say(f"training: {training['state']} ({training['tasks']})")
        canary = wait_new_run(airflow, f"{PIPELINE}_canary", known["canary"], 1800, clock, "announce_canary's Asset")
        clock.say(f"canary: {canary['state']}")
    except TimeoutError as exc:
        clock.say(f"the chain stopped: {exc}")
    finally:
        stats = traffic.close()

    mc = MlflowClient(stack.mlflow_url)
    from ml_ops.pipeline.registry import current_version

    challenger = None
    if training is not None:
        versions = [
            v
            for v in mc.search_model_versions(f"name='{PIPELINE}'")
            if v.tags.get("airflow_run_id") == training["dag_run_id"]
        ]
        challenger = int(versions[0].version) if versions else None
    lines = ["", "=" * 100, f"airflow-mlops demo: the loop of pipeline '{PIPELINE}'", "=" * 100]
    lines.append(
        f"world: {cal.warmup}..{cal.last}, {ROWS_PER_DAY} transactions a day; concept change on {cal.change}; "
        f"champion v{champion} trained for {cal.champion_day} (before the change)"
    )
    for t, text in clock.events:
        lines.append(f"  [{int(t // 60):02d}:{int(t % 60):02d}] {text}")
    lines.append("")
    if monitoring:
        lines.append(f"monitoring run {monitoring['run_id']}: {monitoring['state']}")
        lines += monitoring_lines(store, cfg, cal)
        for e in asset_events(airflow, f"{PIPELINE}_monitoring"):
            lines.append(
                f"  retrain requested: Asset {e.get('name') or e.get('uri')} at {e.get('timestamp', '')[:19]} "
                f"extra {e.get('extra')}"
            )
    if training:
        lines.append(f"training run {training['dag_run_id']} ({training.get('run_type')}): {training['state']}")
        lines.append(f"  tasks: {training['tasks']}")
        lines += decision_lines(store, cfg, challenger)
        for e in asset_events(airflow, f"{PIPELINE}_training"):
            lines.append(f"  canary announced: Asset {e.get('name') or e.get('uri')} at {e.get('timestamp', '')[:19]}")
    lines += canary_lines(stack, cfg, airflow, canary)
    now = current_version(mc, PIPELINE, layout.CHAMPION)
    lines.append(f"champion now: v{now}" + (" (the retrained challenger)" if now == challenger else ""))
    if stats is not None:
        lines.append(f"traffic: {stats}")
    if traffic.error is not None:
        lines.append(f"traffic failed: {traffic.error!r}")
    lines += where_to_look(stack, cfg, cal)
    lines.append(f"demo finished in {time.monotonic() - clock.t0:.0f}s")
    print("\n".join(lines), flush=True)
    return 0 if canary is not None and now == challenger else 1


if __name__ == "__main__":
    sys.exit(main())
