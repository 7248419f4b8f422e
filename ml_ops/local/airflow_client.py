"""Tiny client for Airflow 3's public REST API (v2), enough to drive DAGs from the demo and e2e tests.

Auth: SimpleAuthManager's POST /auth/token {"username", "password"} -> {"access_token"} (a JWT), sent as
`Authorization: Bearer ...`. A 401 refreshes the token once. A transient database error (HTTP 503, or 500 with
reason "Database error": the embedded SQLite metadata DB answers "database is locked" when writers collide) is
retried a few times with backoff (about 7 s in all): such a 500 rolled its transaction back and a 503 was not
served, so a retried POST creates nothing twice.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

TERMINAL_RUN_STATES = {"success", "failed"}
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds before each retry of a transient database error


def transient(status: int, body: str) -> bool:
    """A database error worth retrying: 503, or a 500 from Airflow's SQLAlchemy error handler / a locked SQLite."""
    return status == 503 or (status == 500 and ("Database error" in body or "database is locked" in body))


def run_after_for(logical_date: datetime | None, now: datetime | None = None) -> datetime | None:
    """The ``run_after`` of a manual run for ``logical_date``: the logical date itself, capped at now.

    Airflow's scheduler starts a DAG's queued runs in ``run_after`` order (after backfill runs' own order),
    not by logical date, and a manual run's ``run_after`` defaults to the moment the trigger arrived. With
    max_active_runs=1, days triggered together (two people clicking, parallel requests) could then start the
    later day first, whose history check needs the earlier one. Past days thus get their own date: queued
    runs start oldest day first, whatever order the requests arrived in. A future day starts now, not then."""
    if logical_date is None:
        return None
    now = now or datetime.now(timezone.utc)
    at = logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=timezone.utc)
    return min(at, now)


class AirflowApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class DagImportError(RuntimeError):
    """The dag-processor could not import the DAG file; message carries the stack trace."""


class AirflowClient:
    def __init__(self, base_url: str, username: str = "admin", password: str = "admin", timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self._token: str | None = None

    # ---- HTTP plumbing ---------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": self.username, "password": self.password}).encode()
            req = urllib.request.Request(
                f"{self.base_url}/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    self._token = json.load(resp)["access_token"]
            except urllib.error.HTTPError as exc:
                raise AirflowApiError("POST", "/auth/token", exc.code, exc.read().decode(errors="replace")) from None
        return self._token

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        params: dict | None = None,
        accept: str = "application/json",
        _retry: bool = True,
    ) -> Any:
        url = f"{self.base_url}/api/v2{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        data = json.dumps(body, default=_json_default).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": accept}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for delay in (*RETRY_DELAYS, None):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and _retry:  # expired token: log in again once
                    self._token = None
                    return self.request(method, path, body, params, accept, _retry=False)
                text = exc.read().decode(errors="replace")
                if delay is None or not transient(exc.code, text):
                    raise AirflowApiError(method, path, exc.code, text) from None
                time.sleep(delay)
        if not raw:
            return None
        return json.loads(raw) if accept == "application/json" else raw.decode(errors="replace")

    # ---- DAGs ------------------------------------------------------------------------------------------
    def get_dag(self, dag_id: str) -> dict | None:
        try:
            return self.request("GET", f"/dags/{_q(dag_id)}")
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors", params={"limit": 100}).get("import_errors", [])

    def wait_for_dag(self, dag_id: str, timeout: float = 120, file_hint: str | None = None) -> dict:
        """Wait until the dag-processor has parsed `dag_id`; raise DagImportError on an import error.

        An import error is attributed to this DAG when its file name contains `file_hint` (default: dag_id)
        or, when the DAG never appears, reported anyway so a broken file is not a silent timeout.
        """
        hint = file_hint or dag_id
        deadline = time.monotonic() + timeout
        while True:
            dag = self.get_dag(dag_id)
            if dag is not None:
                return dag
            errors = self.import_errors()
            mine = [e for e in errors if hint in e.get("filename", "")]
            if mine:
                e = mine[0]
                raise DagImportError(f"DAG {dag_id!r}: import error in {e['filename']}:\n{e.get('stack_trace', '')}")
            if time.monotonic() > deadline:
                detail = "".join(
                    f"\n- {e['filename']}: {e.get('stack_trace', '').strip().splitlines()[-1:]}" for e in errors
                )
                raise TimeoutError(
                    f"DAG {dag_id!r} not parsed after {timeout:.0f}s" + (f"; import errors:{detail}" if errors else "")
                )
            time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        return self.request(
            "PATCH", f"/dags/{_q(dag_id)}", body={"is_paused": paused}, params={"update_mask": "is_paused"}
        )

    def unpause(self, dag_id: str) -> dict:
        return self.set_paused(dag_id, False)

    def pause(self, dag_id: str) -> dict:
        return self.set_paused(dag_id, True)

    # ---- DAG runs --------------------------------------------------------------------------------------
    def trigger(
        self, dag_id: str, logical_date: datetime | None = None, conf: dict | None = None, run_id: str | None = None
    ) -> str:
        """Create a manual run; returns its run_id. A naive logical_date is taken as UTC. Runs triggered for
        past days start in day order, whatever order the requests arrive in (``run_after_for``)."""
        body: dict[str, Any] = {"logical_date": _iso(logical_date) if logical_date else None, "conf": conf or {}}
        if (run_after := run_after_for(logical_date)) is not None:
            body["run_after"] = _iso(run_after)
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/dags/{_q(dag_id)}/dagRuns", body=body)["dag_run_id"]

    def backfill(
        self, dag_id: str, from_date, to_date, max_active_runs: int = 1, reprocess_behavior: str = "none"
    ) -> dict:
        """Create a backfill: one run per schedule interval in [from_date, to_date], oldest first."""
        body = {
            "dag_id": dag_id,
            "from_date": _iso(_as_datetime(from_date)),
            "to_date": _iso(_as_datetime(to_date)),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
        }
        return self.request("POST", "/backfills", body=body)

    def dag_runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        page = self.request("GET", f"/dags/{_q(dag_id)}/dagRuns", params={"limit": limit, "order_by": "-logical_date"})
        return page["dag_runs"]

    def get_run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> dict:
        """Mark a run success/failed/queued (what the UI's "mark as" does)."""
        return self.request("PATCH", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}", body={"state": state})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        res = self.request(
            "GET",
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}",
            params={"deserialize": "true"},
        )
        return res.get("value")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 2) -> str:
        """Poll until the run is success/failed; returns the state. Raises TimeoutError with task states."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.get_run(dag_id, run_id)["state"]
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                tis = ", ".join(f"{t['task_id']}={t['state']}" for t in self.task_instances(dag_id, run_id))
                raise TimeoutError(f"run {dag_id}/{run_id} still {state} after {timeout:.0f}s: {tis}")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out, offset = [], 0
        while True:
            page = self.request(
                "GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", params={"limit": 100, "offset": offset}
            )
            out += page["task_instances"]
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return out

    def clear_task_instances(
        self,
        dag_id: str,
        run_id: str,
        task_ids: list[str] | None = None,
        only_failed: bool = False,
        include_downstream: bool = False,
        dry_run: bool = False,
    ) -> list[dict]:
        """Clear task instances of one run so the scheduler re-runs them (their try_number goes up)."""
        body: dict[str, Any] = {
            "dry_run": dry_run,
            "dag_run_id": run_id,
            "only_failed": only_failed,
            "include_downstream": include_downstream,
            "reset_dag_runs": True,
        }
        if task_ids:
            body["task_ids"] = task_ids
        return self.request("POST", f"/dags/{_q(dag_id)}/clearTaskInstances", body=body)["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as text (structured events rendered as `timestamp [level] event key=value`)."""
        res = self.request(
            "GET",
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
        )
        lines = []
        for item in res.get("content", []):
            if isinstance(item, str):
                lines.append(item)
                continue
            extra = {k: v for k, v in item.items() if k not in ("timestamp", "event", "level", "logger")}
            parts = [
                item.get("timestamp") or "",
                f"[{item['level']}]" if item.get("level") else "",
                item.get("event", ""),
            ]
            parts += [f"{k}={v}" for k, v in extra.items()]
            lines.append(" ".join(p for p in parts if p))
        return "\n".join(lines)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _as_datetime(value) -> datetime:
    """A date means its midnight UTC."""
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat()


def _json_default(obj: Any) -> str:
    if isinstance(obj, datetime):
        return _iso(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
