"""The real embedded stack (Airflow scheduler + API, MLflow server, S3 endpoint) for end-to-end tests,
plus a real SMTP server and a Slack-webhook HTTP endpoint that receive the alerts."""

from __future__ import annotations

import json
import shutil
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.helpers import E2E_LABEL_DELAY_DAYS, free_port, running_stack

REPO = Path(__file__).resolve().parents[2]


class Inbox:
    """What the local SMTP server and Slack endpoint received."""

    def __init__(self) -> None:
        self.emails: list[dict] = []
        self.slack: list[dict] = []

    def matching(self, text: str) -> list[dict]:
        return [m for m in self.emails if text in m["subject"] or text in m["body"]]


@pytest.fixture(scope="session")
def inbox():
    from aiosmtpd.controller import Controller

    box = Inbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = message_from_bytes(envelope.content, policy=policy.default)
            parts = [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
            box.emails.append({"to": envelope.rcpt_tos, "subject": str(msg["subject"]), "body": "\n".join(parts)})
            return "250 OK"

    class SlackEndpoint(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            box.slack.append({"path": self.path, "payload": json.loads(body or b"{}")})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    smtp = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", free_port()), SlackEndpoint)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    box.smtp_port, box.slack_url = smtp.port, f"http://127.0.0.1:{http.server_port}/services/T0/B0/hook"
    yield box
    http.shutdown()
    smtp.stop()


@pytest.fixture(scope="session")
def include_dir(tmp_path_factory):
    """A copy of include/ with a shorter training window and label delay so the e2e run needs fewer days (the
    suites' labels tables are drawn with delays to match: tests/e2e/helpers.load_fraud_source)."""
    target = tmp_path_factory.mktemp("include") / "include"
    shutil.copytree(REPO / "include", target)
    fraud = target / "pipelines" / "fraud.yaml"
    text = fraud.read_text()
    for old, new in (
        ("window_days: 6", "window_days: 3"),
        ("holdout_days: 2", "holdout_days: 1"),
        ("label_delay_days: 8", f"label_delay_days: {E2E_LABEL_DELAY_DAYS}"),
        ("min_rows: 1000", "min_rows: 500"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    fraud.write_text(text)
    return target


@pytest.fixture(scope="package")
def stack(inbox, include_dir):
    with running_stack(inbox, {"MLOPS_INCLUDE_DIR": str(include_dir)}) as s:
        yield s


@pytest.fixture(scope="package")
def airflow(stack):
    from ml_ops.local.airflow_client import AirflowClient

    return AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)


@pytest.fixture(scope="package")
def store(stack):
    from ml_ops.storage import ObjectStore

    return ObjectStore(stack.s3_client())


@pytest.fixture(scope="package")
def mlflow_client(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url)
