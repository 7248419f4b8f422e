"""Run order: which day a queued run starts with (run_after), what a step does when earlier days are not
validated yet (wait for running runs, fail at once naming queued or absent ones), and the REST client's
retry of a locked metadata database."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml_ops.airflow.operators.pipeline import active_runs, history_gap
from ml_ops.local import airflow_client
from ml_ops.local.airflow_client import AirflowApiError, AirflowClient, run_after_for, transient
from ml_ops.pipeline.history import IncompleteHistory

GAP = "tumors ds=2026-03-04: validate needs the earlier day(s) 2026-03-02, 2026-03-03, which are not validated yet."
MISSING = ["2026-03-02", "2026-03-03"]


# ---- what a step does about missing earlier days ----------------------------------------------------------
def test_waits_only_while_every_missing_day_is_being_processed():
    wait, message = history_gap(GAP, MISSING, {"2026-03-02": "running", "2026-03-03": "running"})
    assert wait and "waiting" in message and GAP in message


def test_a_day_queued_behind_this_run_fails_at_once_naming_it():
    # One run at a time: the queued predecessor cannot start while this run waits, so waiting would deadlock.
    wait, message = history_gap(GAP, MISSING, {"2026-03-02": "running", "2026-03-03": "queued"})
    assert not wait
    assert "2026-03-03 are queued behind this one" in message and "clear this run" in message
    assert "2026-03-02" in message  # from the step's own message: every missing day is named


def test_a_day_never_triggered_fails_at_once_naming_it():
    wait, message = history_gap(GAP, MISSING, {"2026-03-03": "running"})
    assert not wait
    assert "No run of 2026-03-02 is queued or running: trigger them first" in message


class FakeTI:
    """The Task SDK's RuntimeTaskInstance, as far as ``active_runs`` uses it."""

    dag_id = "tumors_training"

    def __init__(self, runs: dict[str, str], fail: bool = False):
        self.runs, self.fail, self.calls = runs, fail, []

    def get_dr_count(self, dag_id, logical_dates=None, run_ids=None, states=None):
        if self.fail:
            raise ConnectionError("supervisor gone")
        self.calls.append((dag_id, logical_dates, states))
        (at,) = logical_dates
        return int(self.runs.get(at.date().isoformat()) in states)


def test_active_runs_asks_airflow_per_day_by_midnight_logical_date():
    ti = FakeTI({"2026-03-02": "queued", "2026-03-03": "running"})
    assert active_runs({"ti": ti}, [*MISSING, "2026-03-01"]) == {"2026-03-02": "queued", "2026-03-03": "running"}
    assert ti.calls[0] == ("tumors_training", [datetime(2026, 3, 2, tzinfo=timezone.utc)], ["running"])


def test_active_runs_is_empty_when_airflow_cannot_answer():
    assert active_runs({"ti": FakeTI({}, fail=True)}, MISSING) == {}
    assert active_runs({}, MISSING) == {}


@pytest.mark.parametrize(("runs", "outcome"), [("running", "reschedule"), ("queued", "fail"), (None, "fail")])
def test_the_operator_reschedules_or_fails_without_retries(runs, outcome):
    from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

    from ml_ops.airflow.operators.pipeline import HISTORY_POKE, PipelineOperator

    class Gap(PipelineOperator):
        per_day = False

        def run_step(self, context, interval):
            raise IncompleteHistory(GAP, MISSING)

    context = {"ti": FakeTI({d: runs for d in MISSING} if runs else {})}
    before = datetime.now(timezone.utc)
    expected = AirflowRescheduleException if outcome == "reschedule" else AirflowFailException
    with pytest.raises(expected) as caught:
        Gap(task_id="validate", pipeline="tumors").execute(context)
    if outcome == "reschedule":
        assert caught.value.reschedule_date >= before + HISTORY_POKE - timedelta(seconds=1)
    else:
        assert "2026-03-02, 2026-03-03" in str(caught.value)


# ---- queue order: run_after ---------------------------------------------------------------------------------
def test_a_past_day_runs_after_its_own_date_so_queued_days_start_oldest_first():
    now = datetime(2026, 12, 2, 10, tzinfo=timezone.utc)
    days = [datetime(2026, 3, d, tzinfo=timezone.utc) for d in (4, 2, 3, 1)]  # requests in any order
    assert sorted(days, key=lambda d: run_after_for(d, now)) == sorted(days)
    assert run_after_for(datetime(2026, 3, 1), now) == datetime(2026, 3, 1, tzinfo=timezone.utc)  # naive = UTC
    assert run_after_for(datetime(2027, 1, 1, tzinfo=timezone.utc), now) == now  # a future day is not held back
    assert run_after_for(None, now) is None  # no logical date: Airflow's default (the trigger's moment)


# ---- the REST client against a server whose metadata database is locked -------------------------------------
class FakeAirflow(BaseHTTPRequestHandler):
    """/auth/token, then POST /api/v2/dags/x/dagRuns answered from ``script`` (status, body) in turn."""

    script: list[tuple[int, dict]] = []
    bodies: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/auth/token":
            status, reply = 201, {"access_token": "t"}
        else:
            type(self).bodies.append(body)
            status, reply = type(self).script.pop(0)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_airflow(monkeypatch):
    monkeypatch.setattr(airflow_client, "RETRY_DELAYS", (0, 0, 0))
    FakeAirflow.script, FakeAirflow.bodies = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield AirflowClient(f"http://127.0.0.1:{server.server_port}")
    server.shutdown()


LOCKED = (500, {"detail": {"reason": "Database error", "statement": "hidden", "orig_error": "hidden"}})


def test_a_locked_database_is_retried_and_the_trigger_carries_run_after(fake_airflow):
    FakeAirflow.script = [LOCKED, (503, {"detail": "starting"}), (200, {"dag_run_id": "r1"})]
    run_id = fake_airflow.trigger("x", logical_date=datetime(2026, 3, 2, tzinfo=timezone.utc), run_id="r1")
    assert run_id == "r1" and len(FakeAirflow.bodies) == 3
    assert FakeAirflow.bodies[-1]["run_after"] == FakeAirflow.bodies[-1]["logical_date"] == "2026-03-02T00:00:00+00:00"


def test_retries_are_bounded_and_other_errors_are_not_retried(fake_airflow):
    FakeAirflow.script = [LOCKED] * 4
    with pytest.raises(AirflowApiError, match="HTTP 500"):
        fake_airflow.trigger("x")
    assert len(FakeAirflow.bodies) == 4  # the first try and three retries
    FakeAirflow.script, FakeAirflow.bodies = [(409, {"detail": "exists"}), (200, {})], []
    with pytest.raises(AirflowApiError, match="HTTP 409"):
        fake_airflow.trigger("x")
    assert len(FakeAirflow.bodies) == 1
    assert transient(500, '{"detail": "(sqlite3.OperationalError) database is locked"}')
    assert not transient(500, '{"detail": "boom"}') and not transient(400, "Database error")
