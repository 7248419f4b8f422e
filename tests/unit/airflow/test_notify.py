"""Alerts reach a real SMTP server and a real HTTP endpoint; absent connections mean silence, not errors;
an alert that is not sent is logged with the reason."""

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk import BaseHook

from ml_ops.airflow.notify import send_alert
from ml_ops.config import Alerts

LOGGER = "ml_ops.airflow.notify"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def receivers(monkeypatch):
    from aiosmtpd.controller import Controller

    mails, posts = [], []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mails.append((envelope.rcpt_tos, envelope.content.decode(errors="replace")))
            return "250 OK"

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    smtp = Controller(Handler(), hostname="127.0.0.1", port=_free_port())
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", _free_port()), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com"},
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_ALERTS",
        json.dumps({"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{http.server_port}/hook"}),
    )
    yield mails, posts
    http.shutdown()
    smtp.stop()


def test_alert_goes_to_email_and_slack(receivers):
    mails, posts = receivers
    sent = send_alert(Alerts(email=["team@example.com"]), "fraud: v2 wins", "roc_auc 0.91 vs 0.89")
    assert sent == ["email", "slack"]
    assert mails[0][0] == ["team@example.com"] and "fraud: v2 wins" in mails[0][1]
    assert "roc_auc 0.91 vs 0.89" in posts[0]["text"]


def _records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_no_connections_means_no_alert_and_no_error(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_ALERTS", raising=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert send_alert(Alerts(email=["team@example.com"]), "fraud: v2 wins", "t") == []
    # Not configured is said, at info (a laptop without SMTP or Slack is normal), naming what was not sent.
    records = _records(caplog)
    assert {r.levelno for r in records} == {logging.INFO}
    text = "\n".join(r.getMessage() for r in records)
    assert "email alert not sent, connection 'smtp_default' is not configured: fraud: v2 wins" in text
    assert "slack alert not sent, connection 'slack_alerts' is not configured: fraud: v2 wins" in text


def test_unreadable_connection_is_logged_with_the_error_and_the_other_channel_still_sends(
    receivers, monkeypatch, caplog
):
    """A secrets backend that fails (not "connection absent") must not read as "not configured"."""
    mails, posts = receivers
    real = BaseHook.get_connection.__func__

    def flaky(cls, conn_id):
        if conn_id == "smtp_default":
            raise PermissionError("secrets backend: access denied to smtp_default")
        return real(cls, conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(flaky))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        sent = send_alert(Alerts(email=["team@example.com"]), "fraud: v2 wins", "roc_auc 0.91 vs 0.89")
    assert sent == ["slack"] and not mails and "roc_auc 0.91 vs 0.89" in posts[0]["text"]
    [record] = [r for r in _records(caplog) if r.levelno >= logging.WARNING]
    assert "email alert not sent, connection 'smtp_default' could not be read: fraud: v2 wins" in record.getMessage()
    assert isinstance(record.exc_info[1], PermissionError)


def test_unreachable_server_does_not_raise_and_is_logged(monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": _free_port(),
                "extra": {"disable_ssl": True, "timeout": 2},
            }
        ),
    )
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_ALERTS", raising=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert send_alert(Alerts(email=["team@example.com"]), "s", "t") == []
    [record] = [r for r in _records(caplog) if r.levelno >= logging.WARNING]
    assert "email alert to ['team@example.com'] failed: s" in record.getMessage() and record.exc_info
