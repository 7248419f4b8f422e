from __future__ import annotations

from ml_ops.operators.base import PipelineOperator


class PromoteOperator(PipelineOperator):
    """Moves the winning challenger forward.

    ``promotion.mode: direct``: the version becomes ``champion`` (the previous one is kept in the
    champion history for rollback). ``canary``: the version gets alias ``canary`` and the canary
    deployment takes it from there.
    """

    template_fields = ("pipeline", "decision")

    def __init__(self, *, decision, **kwargs) -> None:
        super().__init__(**kwargs)
        self.decision = decision

    def execute(self, context) -> dict:
        from ml_ops.hooks.mlflow import MlflowHook
        from ml_ops.registry import promote

        cfg = self.cfg
        version = int(self.decision["version"])
        client = MlflowHook(cfg.mlflow_conn_id).get_conn()
        if cfg.promotion.mode == "canary":
            client.set_registered_model_alias(cfg.name, "canary", str(version))
            self.log.info("%s v%s is now the canary", cfg.name, version)
            return {"canary": version}
        previous = promote(client, cfg.name, version, reason=self.decision["reason"])
        self.log.info("%s v%s is now champion (previous: %s)", cfg.name, version, previous)
        return {"champion": version, "previous": previous}
