"""Alerts by email and Slack, built from a pipeline's ``alerts`` config.

A channel is used only when its Airflow connection exists, so a laptop without SMTP or Slack
configured runs quietly and a deployment turns alerts on by adding the connection. An alert that is
not sent is always logged with the reason: at info when the channel is not configured (no recipients,
no connection id, a connection that does not exist); as an error with the exception when the connection
could not be read (secrets backend down, access denied) or the send failed. Nothing here raises: the
step that alerts carries on.
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseHook, BaseNotifier
from airflow.sdk.exceptions import AirflowNotFoundException

log = logging.getLogger(__name__)


def _has_connection(channel: str, conn_id: str | None, subject: str) -> bool:
    """Whether ``conn_id`` exists; if not, log why the ``channel`` alert ``subject`` is not sent."""
    if not conn_id:
        log.info("%s alert not sent, no connection configured: %s", channel, subject)
        return False
    try:
        BaseHook.get_connection(conn_id)
        return True
    except AirflowNotFoundException:
        log.info("%s alert not sent, connection %r is not configured: %s", channel, conn_id, subject)
    except Exception:  # secrets backend unreachable, access denied, malformed connection, ...
        log.exception("%s alert not sent, connection %r could not be read: %s", channel, conn_id, subject)
    return False


def send_alert(alerts, subject: str, text: str, context=None) -> list[str]:
    """Send ``text`` to every configured channel; returns the channels used. Never raises:
    an alert that cannot be delivered must not fail the pipeline step that produced it,
    but it is logged with the reason (module docstring)."""
    sent: list[str] = []
    if not alerts.email:
        log.info("email alert not sent, no recipients configured: %s", subject)
    elif _has_connection("email", alerts.email_conn_id, subject):
        try:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            html = "<pre>" + _escape(text) + "</pre>"
            SmtpNotifier(to=alerts.email, subject=subject, html_content=html, smtp_conn_id=alerts.email_conn_id).notify(
                context or {}
            )
            sent.append("email")
        except Exception:
            log.exception("email alert to %s failed: %s", alerts.email, subject)
    if _has_connection("slack", alerts.slack_conn_id, subject):
        try:
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            SlackWebhookNotifier(slack_webhook_conn_id=alerts.slack_conn_id, text=f"*{subject}*\n{text}").notify(
                context or {}
            )
            sent.append("slack")
        except Exception:
            log.exception("slack alert via %s failed: %s", alerts.slack_conn_id, subject)
    return sent


def _escape(text: str) -> str:
    import html

    return html.escape(text)


class PipelineFailureNotifier(BaseNotifier):
    """Task failure alert naming the pipeline, task, data date and the error, with the log link.

    Used as ``on_failure_callback`` (called once a task has failed for good, not on retries).
    """

    def __init__(self, pipeline: str, alerts) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.alerts = alerts

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        task_id = getattr(ti, "task_id", "?")
        dag_id = getattr(ti, "dag_id", "?")
        error = context.get("exception")
        run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", "?")
        subject = f"[airflow-mlops] {self.pipeline}: {dag_id}.{task_id} failed ({run_id})"
        lines = [
            f"Pipeline: {self.pipeline}",
            f"DAG: {dag_id}  task: {task_id}  run: {run_id}",
            f"Error: {error}",
        ]
        log_url = getattr(ti, "log_url", None)
        if log_url:
            lines.append(f"Log: {log_url}")
        send_alert(self.alerts, subject, "\n".join(lines), context)
