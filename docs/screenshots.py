"""Refresh the README's screenshots from a real embedded stack (a script, not a test).

    .venv/bin/python docs/screenshots.py [--days 12] [--keep]

Brings up the embedded stack (``ml_ops.local.stack.Stack``) in a temporary MLOPS_HOME on free ports, with
``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True`` so the Airflow UI opens without a login page (only
here: the stack's default keeps the login), loads simulated days as ``make demo`` does, runs the fraud
training DAG over them as an Airflow backfill, then takes headless Chromium screenshots of

* the Airflow grid of ``fraud_training``                   → docs/img/airflow-grid.png
* the MLflow page of the ``fraud`` model's champion version → docs/img/mlflow-model.png

Chromium (Debian's package: ``make browser``) runs headless as in the README's render test
(``--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900``) and is driven over
the DevTools protocol rather than with ``--screenshot`` alone, for two reasons: the picture is taken
only once the page shows what it must (every grid cell with its task state, the champion alias), never
a login page or a spinner, and two UI settings are put in the page's localStorage first: a wider grid
panel in Airflow (its default 20 % shows four runs) and MLflow's assistant panel closed (it opens itself
on a first visit to a local server and covers a third of the page).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
IMG = REPO / "docs" / "img"
WINDOW = (1400, 900)
PIPELINE = "fraud"
LOGIN_WORDS = ("Sign in", "Sign In", "Log in", "Login", "Password")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("Chromium not found: `make browser` installs Debian's chromium")
    return path


class Chromium:
    """One headless Chromium tab over the DevTools protocol (websockets is in the lock)."""

    def __init__(self, profile: Path, size: tuple[int, int] = WINDOW):
        from websockets.sync.client import connect

        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        w, h = size
        self.proc = subprocess.Popen(
            [
                browser(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={w},{h}",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("headless Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self._exit = contextlib.ExitStack()
        self.ws = self._exit.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self._id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # skip events until our answer
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, ready: str = "document.readyState === 'complete'", timeout: float = 90) -> bool:
        """Navigate; True once the JS expression ``ready`` is true."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(ready):
                    return True
            except RuntimeError:  # the page's context is being replaced mid-navigation
                pass
            time.sleep(0.5)
        return False

    def screenshot(self, target: Path) -> Path:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.png")
        tmp.write_bytes(data)
        tmp.replace(target)
        return target

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a browser that is already gone
            if getattr(self, "ws", None) is not None:
                self.call("Browser.close")
                self._exit.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def capture(
    page: Chromium,
    origin: str,
    path: str,
    target: Path,
    *,
    storage_page: str,
    local_storage: dict[str, str],
    ready: str,
    what: str,
) -> None:
    """Set ``local_storage`` on ``origin``, open ``origin + path``, wait for ``ready``, save a PNG.

    The storage is written from ``storage_page``, a page of the same origin that is not the UI app
    (a health endpoint): the app would otherwise race us, e.g. MLflow saving its assistant panel open."""
    if not page.goto(origin + storage_page):
        raise RuntimeError(f"{origin + storage_page} did not load")
    for key, value in local_storage.items():
        page.eval(f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})")
    if not page.goto(origin + path, ready=ready):
        text = (page.eval("document.body ? document.body.innerText.slice(0, 600) : ''") or "").replace("\n", " | ")
        raise RuntimeError(f"{origin + path} never showed {what}; the page says: {text}")
    time.sleep(2)  # let charts and fonts settle
    page.screenshot(target)
    print(f"  {target.relative_to(REPO)}  <- {origin + path}", flush=True)


def _not_login() -> str:
    return " && ".join(f"!document.body.innerText.includes({json.dumps(w)})" for w in LOGIN_WORDS)


def airflow_grid(page: Chromium, stack, dag_id: str, tasks: list[str], runs: int) -> None:
    shown = min(runs, 10)  # the grid's default window of runs
    cells = (
        f'document.querySelectorAll(\'a[id^="grid-"] [data-testid="task-state-badge"]\').length >= {len(tasks) * shown}'
    )
    capture(
        page,
        stack.airflow_url,
        f"/dags/{dag_id}",
        IMG / "airflow-grid.png",
        storage_page="/api/v2/monitor/health",
        # react-resizable-panels' saved layout of the DAG page: grid 42 %, details 58 %
        local_storage={
            "react-resizable-panels:grid-ltr": json.dumps(
                {"details-panel,main-panel": {"expandToSizes": {}, "layout": [42, 58]}}
            )
        },
        ready=" && ".join(
            [f"document.body.innerText.includes({json.dumps(t)})" for t in tasks]
            + [
                cells,
                "document.body.innerText.includes('Latest Run')",
                "!document.body.innerText.includes('Backfill in progress')",
                _not_login(),
            ]
        ),
        what=f"the grid of {shown} runs x {len(tasks)} tasks with their states",
    )


def mlflow_champion(page: Chromium, stack, model: str) -> None:
    from mlflow import MlflowClient

    version = MlflowClient(stack.mlflow_url).get_model_version_by_alias(model, "champion").version
    capture(
        page,
        stack.mlflow_url,
        f"/#/models/{model}/versions/{version}",
        IMG / "mlflow-model.png",
        storage_page="/health",
        local_storage={
            "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
            "mlflow.assistant.panelOpen_v1": "false",
        },
        ready=" && ".join(
            [
                "document.body.innerText.includes('champion')",
                "document.body.innerText.includes('data_window')",
                f"document.body.innerText.includes('Version {version}')",
                # the assistant panel's texts (its floating button says only "MLflow Assistant")
                "!document.body.innerText.includes('Ask questions about your')",
                "!document.body.innerText.includes('Welcome to MLflow Assistant')",
                "!document.body.innerText.includes('Assistant setup required')",
            ]
        ),
        what=f"version {version} with the champion alias and its tags (and the assistant panel closed)",
    )


def wait_backfill_completed(client, dag_id: str, timeout: float = 120) -> None:
    """The scheduler marks a backfill complete a little after its last run; until then the UI shows a
    "Backfill in progress" banner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfills = client.request("GET", "/backfills", params={"dag_id": dag_id})["backfills"]
        if all(b.get("completed_at") for b in backfills):
            return
        time.sleep(3)
    raise TimeoutError(f"{dag_id}: backfill not marked complete within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--days",
        type=int,
        default=int(os.environ.get("MLOPS_DEMO_DAYS", "12")),
        help="simulated days to run the training DAG over (12, as make demo)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running and its home in place")
    args = parser.parse_args(argv)
    browser()  # fail before a 10-minute setup, not after

    home = Path(tempfile.mkdtemp(prefix="mlops-screenshots-"))
    os.environ.update(
        {
            "MLOPS_HOME": str(home),
            "MLOPS_AIRFLOW_PORT": str(free_port()),
            "MLOPS_MLFLOW_PORT": str(free_port()),
            "MLOPS_S3_PORT": str(free_port()),
            "MLOPS_SCHEDULES": "on",  # as `make demo`: a backfill needs the daily schedule
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # no login page in the screenshots
        }
    )
    for var in ("MLOPS_INCLUDE_DIR", "MLOPS_DB_URL", "MLOPS_MLFLOW_DB_URL", "MLOPS_EXECUTOR"):
        os.environ.pop(var, None)  # the shipped pipelines on the default (demo) shape

    from ml_ops.local.airflow_client import AirflowClient
    from ml_ops.local.demo import load_source, run_backfill
    from ml_ops.local.stack import Stack

    started = time.monotonic()
    stack = Stack.from_env()
    print(f"stack in {home}", flush=True)
    try:
        stack.up()
        last = datetime.now(timezone.utc).date() - timedelta(days=1)
        first = last - timedelta(days=args.days - 1)
        load_source(stack, last, args.days)
        client = AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)
        dag_id = f"{PIPELINE}_training"
        print(f"running {dag_id} for {first}..{last} (backfill):", flush=True)
        run_backfill(client, dag_id, first, last, timeout=60 * args.days + 600)
        wait_backfill_completed(client, dag_id)
        tasks = [t["task_id"] for t in client.request("GET", f"/dags/{dag_id}/tasks")["tasks"]]

        print("screenshots:", flush=True)
        page = Chromium(home / "chromium-profile")
        try:
            airflow_grid(page, stack, dag_id, tasks, runs=args.days)
            mlflow_champion(page, stack, PIPELINE)
        finally:
            page.close()
    finally:
        if args.keep:
            print(
                f"stack left running: MLOPS_HOME={home} (stop: MLOPS_HOME={home} make down); "
                f"Airflow {stack.airflow_url}, MLflow {stack.mlflow_url}"
            )
        else:
            stack.down()
            shutil.rmtree(home, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
