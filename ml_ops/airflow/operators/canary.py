"""The canary rollout as one deferrable task, and the one-trigger manual rollback.

Between steps the task is deferred to the triggerer (``DateTimeTrigger``), so a 40-minute rollout holds
no worker slot. Each resumption judges the step that just ended, then defers again, promotes or rolls
back. All state that matters lives in S3 (deployment state) and MLflow (aliases, tags, the canary run),
so a retried task or a restarted gateway continues the same rollout.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ml_ops import layout
from ml_ops.airflow.operators.pipeline import PipelineOperator, triggered_by


def flush_gateway(conn_id: str, log) -> None:
    """Ask the gateway to write its buffered logs now, so the judge sees the step's last seconds.
    Best effort: without the connection or gateway the judge uses what the periodic flush wrote."""
    import json
    import urllib.request

    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - no such connection: nothing to flush
        return
    url = f"{conn.schema or 'http'}://{conn.host}:{conn.port or 8000}/admin/flush"
    request = urllib.request.Request(
        url,
        method="POST",
        data=b"{}",
        headers={"Authorization": f"Bearer {conn.password}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            log.info("gateway flush: %s", json.load(resp))
    except Exception as exc:  # noqa: BLE001
        log.warning("gateway flush at %s failed (%s); judging what is already written", url, exc)


class CanaryOperator(PipelineOperator):
    """Shifts traffic to the ``canary`` version step by step (``canary.steps``), judging it against the
    champion after each step; promotes after the last step or rolls back at the first failing one. What
    follows a judgement is ``ml_ops.rollout.actions.next_action`` (pure); this operator only carries it out.

    Version: Params ``version``, else the version holding the ``canary`` alias (set by a winning
    challenger's promote task). A version without a passed offline gate is refused unless Params ``force``
    is true with a ``reason`` (``ml_ops.rollout.gate``; recorded and alerted). XCom: ``{outcome, version,
    reason, forced, ...}``.
    """

    ui_color = "#fdf3e8"
    per_day = False

    # ---- helpers ------------------------------------------------------------------------------------
    def _policy(self, context):
        from ml_ops.rollout.canary import policy_for

        return policy_for(self.cfg, context.get("params") or {})

    def _wait(self, *, step: int, step_start: str, extension: int, minutes: float):
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        moment = datetime.now(timezone.utc) + timedelta(minutes=minutes)
        self.log.info(
            "step %d: judging at %s (extension %d)", step + 1, moment.isoformat(timespec="seconds"), extension
        )
        self.defer(
            trigger=DateTimeTrigger(moment=moment),
            method_name="judge_step",
            kwargs={"step": step, "step_start": step_start, "extension": extension},
        )

    # ---- entry --------------------------------------------------------------------------------------
    def run_step(self, context, interval):
        from airflow.sdk.exceptions import AirflowFailException

        from ml_ops.airflow.notify import send_alert
        from ml_ops.pipeline.registry import current_version
        from ml_ops.pipeline.steps import SkipStep
        from ml_ops.rollout import canary

        params = context.get("params") or {}
        policy = self._policy(context)
        client = self.mlflow_client()
        requested = params.get("version")
        version = int(requested) if requested else current_version(client, self.cfg.name, layout.CANARY)
        if version is None:
            raise SkipStep(f"{self.cfg.name}: no version given (Params 'version') and no 'canary' alias set")
        try:
            state = canary.start(
                self.cfg,
                self.store(),
                client,
                version,
                run_id=context["run_id"],
                policy=policy,
                force=bool(params.get("force")),
                reason=params.get("reason"),
                by=triggered_by(context),
            )
        except (canary.CanaryBusy, ValueError) as refused:  # retrying would not change the answer (GateRefused too)
            raise AirflowFailException(str(refused)) from None
        self.log.info("canary v%s vs champion v%s: %s", version, state.champion_version, state.reason)
        if state.forced and state.step == 0:  # an override is always alerted (a retried start may repeat it)
            send_alert(
                self.cfg.alerts,
                f"[airflow-mlops] {self.cfg.name}: canary v{version} FORCED past its offline gate",
                f"{state.reason}\nTriggered by run {context['run_id']}; recorded in "
                f"{layout.decision_log(self.cfg.prefix())} and the version's canary.forced tags.",
                context,
            )
        self._wait(
            step=state.step, step_start=state.step_started_at.isoformat(), extension=0, minutes=policy.step_minutes
        )

    # ---- after each wait: judge, then carry out ml_ops.rollout.actions.next_action ---------------------
    def judge_step(self, context, event=None, *, step: int, step_start: str, extension: int):
        from ml_ops.airflow.notify import send_alert
        from ml_ops.rollout import canary
        from ml_ops.rollout.actions import next_action, where
        from ml_ops.rollout.deployment import read_state

        cfg, store, client, tracking_uri = self.cfg, self.store(), self.mlflow_client(), self.tracking_uri()
        policy = self._policy(context)
        state = read_state(store, cfg)
        if not state.running or state.run_id != context["run_id"]:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{cfg.name}: the canary was ended elsewhere ({state.status}: {state.reason})")
        flush_gateway(cfg.serving.gateway_conn_id, self.log)
        verdict = canary.analyse(cfg, store, state, policy, datetime.fromisoformat(step_start))
        canary.record(tracking_uri, cfg, state, step, extension, verdict)
        self.log.info("%s: %s, score %.0f: %s", where(step, policy), verdict.outcome, verdict.score, verdict.reason)
        for m in verdict.metrics:
            self.log.info("  %-10s %-6s %s", m.name, m.verdict, m.reason)

        action = next_action(
            verdict.outcome,
            step,
            extension,
            policy,
            score=verdict.score,
            detail=verdict.reason,
            version=state.canary_version,
        )
        self.log.info("next: %s (%s)", action.kind, action.reason)
        if action.kind == "advance":
            state = canary.advance(cfg, store, state, policy, action.step, action.reason)
            return self._wait(
                step=action.step, step_start=state.step_started_at.isoformat(), extension=0, minutes=policy.step_minutes
            )
        if action.kind == "extend":
            return self._wait(step=step, step_start=step_start, extension=action.extension, minutes=policy.step_minutes)
        if action.kind == "promote":
            outcome = canary.promote(cfg, store, client, tracking_uri, state, action.reason)
        else:
            outcome = canary.roll_back(cfg, store, client, tracking_uri, state, action.reason)
        if cfg.alerts.on_decision or state.forced:
            forced = " (forced past its gate)" if state.forced else ""
            send_alert(
                cfg.alerts,
                f"[airflow-mlops] {cfg.name}: canary v{outcome['version']} {outcome['outcome'].replace('_', ' ')}"
                + forced,
                canary.verdict_text(state, verdict, outcome),
                context,
            )
        return {**outcome, "score": verdict.score, "step": step + 1, "forced": state.forced}


class ReleaseTrafficOperator(PipelineOperator):
    """Teardown of the canary DAG: if the rollout died (failure, timeout, marked failed) while its run
    still held the traffic split, all traffic goes back to the champion and the canary alias is cleared."""

    per_day = False

    def run_step(self, context, interval):
        from ml_ops.rollout import canary

        client = self.mlflow_client()
        released = canary.release(
            self.cfg,
            self.store(),
            client,
            run_id=context["run_id"],
            why=f"run {context['run_id']} ended without a verdict",
        )
        return released or {"released": False}


class RollbackOperator(PipelineOperator):
    """Manual rollback in one trigger: ends any running canary, then ``champion`` → previous champion."""

    per_day = False

    def run_step(self, context, interval):
        from ml_ops.airflow.notify import send_alert
        from ml_ops.pipeline import registry
        from ml_ops.rollout import canary
        from ml_ops.rollout.deployment import read_state

        reason = (context.get("params") or {}).get("reason") or "manual rollback"
        cfg, store, client = self.cfg, self.store(), self.mlflow_client()
        state = read_state(store, cfg)
        aborted = None
        if state.running:
            aborted = canary.roll_back(cfg, store, client, self.tracking_uri(), state, f"aborted by rollback: {reason}")
        before = registry.current_version(client, cfg.name, layout.CHAMPION)
        restored = registry.rollback(client, cfg.name, reason=reason, by=triggered_by(context))
        text = f"champion v{before} → v{restored}\nReason: {reason}"
        if aborted:
            text += f"\nRunning canary v{aborted['version']} was stopped first."
        send_alert(cfg.alerts, f"[airflow-mlops] {cfg.name}: rolled back to v{restored}", text, context)
        return {"champion": restored, "previous": before, "aborted_canary": aborted and aborted["version"]}
