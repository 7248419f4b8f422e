from __future__ import annotations

from ml_ops.operators.base import PipelineOperator


class CompareOperator(PipelineOperator):
    """Scores challenger and champion on the same holdout and records the decision.

    The decision goes to the version's tags and a comparison run (done by ``compare_and_record``),
    to ``decisions/log.jsonl`` in S3, and to the alert channels. It never moves an alias.
    XCom: ``{"promote", "version", "reason"}``.
    """

    template_fields = ("pipeline", "train_result")

    def __init__(self, *, train_result, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_result = train_result

    def execute(self, context) -> dict:
        from datetime import datetime

        from ml_ops.compare import Policy, compare_and_record
        from ml_ops.hooks.mlflow import MlflowHook
        from ml_ops.notify import send_alert
        from ml_ops.operators.train import load_labelled

        cfg, interval = self.cfg, self.interval(context)
        trained = self.train_result
        holdout = load_labelled(
            self.store, trained["holdout_uris"], cfg, datetime.fromisoformat(trained["labels_known_at"])
        )
        p = cfg.promotion
        decision = compare_and_record(
            tracking_uri=MlflowHook(cfg.mlflow_conn_id).get_tracking_uri(),
            model_name=cfg.name,
            challenger_version=int(trained["version"]),
            holdout_df=holdout,
            target=cfg.target.column,
            policy=Policy(
                primary_metric=p.primary_metric,
                floors=dict(p.floors),
                min_improvement=dict(p.min_improvement),
                require_significant=p.require_significant,
                bootstrap_samples=p.bootstrap_samples,
                confidence=p.confidence,
            ),
            experiment=cfg.name,
            idempotency_key=f"{cfg.name}:v{trained['version']}",
        )
        record = {
            **decision.to_dict(),
            "key": f"{cfg.name}:v{trained['version']}",
            "pipeline": cfg.name,
            "data_date": interval.ds,
            "airflow_run_id": context["run_id"],
            "mode": p.mode,
        }
        appended = self.store.append_jsonl(f"{cfg.prefix()}/decisions/log.jsonl", record, key="key")
        verdict = "WINS" if decision.promote else "does not win"
        self.log.info("challenger v%s %s: %s", trained["version"], verdict, decision.reason)
        if appended and cfg.alerts.on_decision:
            send_alert(
                cfg.alerts,
                f"[airflow-mlops] {cfg.name}: challenger v{trained['version']} {verdict}",
                f"{decision.reason}\nData date: {interval.ds}\nChecks:\n"
                + "\n".join(f" - {c}" for c in decision.checks),
                context,
            )
        return {"promote": bool(decision.promote), "version": int(trained["version"]), "reason": decision.reason}
