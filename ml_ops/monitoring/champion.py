"""The champion a day is judged against: which version served it, and that version's model, reference
sample and holdout AUC.

Each day is judged with the version that held ``champion`` on that day, not today's (a backfill of
reports after a promotion must not judge last week with this week's model). In order of evidence:

1. ``serving_logs``: the version that answered most of the day's successful champion-routed predictions
   (the gateway logs ``version`` per row);
2. ``alias_history``: the version that held the alias longest during the day, from the registry's alias
   history (``ml_ops.pipeline.registry.get_history``; promotions and rollbacks both record the holder);
3. ``current``: today's champion, when neither says anything about the day (a day before any recorded
   promotion, or a history that was trimmed or never kept).

The reference is the champion's own training sample (``reference/reference.parquet`` in its MLflow run),
so a new champion brings its own reference.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DayInterval
from ml_ops.pipeline.steps import SkipStep
from ml_ops.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SERVING_LOGS, ALIAS_HISTORY, CURRENT = "serving_logs", "alias_history", "current"  # how a day's champion was found
HOW = {  # for people: how the day's champion was found
    SERVING_LOGS: "served the day's traffic (serving logs)",
    ALIAS_HISTORY: "held the champion alias that day (alias history)",
    CURRENT: "today's champion: nothing recorded says who served that day",
}


class Champion:
    """A champion version's model, training run, reference sample and holdout AUC (``version`` None: the
    version holding ``champion`` now; ``SkipStep`` when there is none)."""

    def __init__(self, cfg: Pipeline, tracking_uri: str, version: int | None = None):
        import pandas as pd
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts

        from ml_ops.pipeline.registry import current_version
        from ml_ops.pipeline.train import load_model_version

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if version is None:
            version = current_version(client, cfg.name, layout.CHAMPION)
            if version is None:
                raise SkipStep(f"{cfg.name}: no champion model yet; nothing to monitor")
        mv = client.get_model_version(cfg.name, str(version))
        self.version = int(version)
        self.run_id = mv.run_id
        self.model = load_model_version(tracking_uri, cfg.name, version)
        path = download_artifacts(run_id=mv.run_id, artifact_path=layout.REFERENCE_ARTIFACT, tracking_uri=tracking_uri)
        self.reference = pd.read_parquet(path)
        run = client.get_run(mv.run_id)
        self.reference_auc = run.data.metrics.get("roc_auc")  # holdout AUC: out of sample
        try:  # rows the champion was fitted on score better than new rows: keep them out of quality
            self.train_uris = set(json.loads(run.data.params.get("data_uris.train", "[]")))
        except ValueError:  # clipped by MLflow's param length limit
            self.train_uris = set()
        schema = self.model.metadata.get_input_schema()
        self.inputs = schema.input_names() if schema is not None and schema.has_input_names() else []

    def score(self, df: pd.DataFrame):
        from ml_ops.scoring import score

        return score(self.model, df)


def _at(entry: dict) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(entry["at"]))
    except (KeyError, ValueError):
        return None
    return at if at.tzinfo else None  # the registry writes UTC offsets; a naive time cannot be placed


def holder_during(history: list[dict], interval: DayInterval) -> int | None:
    """The version that held the alias longest during the day (the later one on a tie), from an alias
    history (oldest first, each entry the alias's new holder from ``at`` on); None when no entry is
    dated before the day's end."""
    changes = sorted((at, int(e["version"])) for e in history if (at := _at(e)) is not None)
    held: dict[int, float] = {}
    for i, (at, version) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else interval.end
        seconds = (min(until, interval.end) - max(at, interval.start)).total_seconds()
        if seconds > 0:
            held[version] = held.get(version, 0.0) + seconds
    if not held:
        return None
    return max(held, key=lambda v: (held[v], max(at for at, w in changes if w == v)))


def _registered(client: MlflowClient, cfg: Pipeline, version: int) -> bool:
    from mlflow.exceptions import MlflowException

    from ml_ops.pipeline.registry import RegistryUnreachable, is_absent

    try:
        client.get_model_version(cfg.name, str(version))
        return True
    except MlflowException as exc:
        if is_absent(exc):
            return False
        raise RegistryUnreachable(f"MLflow registry lookup of {cfg.name} v{version} failed: {exc}") from exc


def alias_history(client: MlflowClient, cfg: Pipeline) -> list[dict]:
    """The ``champion`` alias history; empty when the model is not registered yet."""
    from mlflow.exceptions import MlflowException

    from ml_ops.pipeline.registry import RegistryUnreachable, get_history, is_absent

    try:
        return get_history(client, cfg.name, layout.CHAMPION)
    except MlflowException as exc:
        if is_absent(exc):
            return []
        raise RegistryUnreachable(f"MLflow registry lookup of {cfg.name}'s alias history failed: {exc}") from exc


def day_champion(
    cfg: Pipeline, store: ObjectStore, interval: DayInterval, client: MlflowClient, history: list[dict] | None = None
) -> tuple[int, str]:
    """``(version, how)``: the champion that served the day (see the module docstring); ``SkipStep`` when there
    is none at all. ``history``: the alias history, when the caller already read it (a backfill)."""
    from ml_ops.monitoring.current import served_versions
    from ml_ops.pipeline.registry import current_version

    served = served_versions(cfg, store, interval.ds)
    for version, rows in served.most_common():
        if _registered(client, cfg, version):
            if len(served) > 1:
                log.info("%s ds=%s: champion route served by versions %s", cfg.name, interval.ds, dict(served))
            return version, SERVING_LOGS
        log.warning("%s ds=%s: v%d served %d rows but is no longer registered", cfg.name, interval.ds, version, rows)
    version = holder_during(alias_history(client, cfg) if history is None else history, interval)
    if version is not None and _registered(client, cfg, version):
        return version, ALIAS_HISTORY
    version = current_version(client, cfg.name, layout.CHAMPION)
    if version is None:
        raise SkipStep(f"{cfg.name}: no champion model yet; nothing to monitor")
    return version, CURRENT


class Champions:
    """Each day's champion, each version loaded once (a backfill over a promotion needs two)."""

    def __init__(self, cfg: Pipeline, store: ObjectStore, tracking_uri: str):
        from mlflow import MlflowClient

        self.cfg, self.store, self.tracking_uri = cfg, store, tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._loaded: dict[int, Champion] = {}
        self._history: list[dict] | None = None

    def for_day(self, interval: DayInterval) -> tuple[Champion, str]:
        """The day's champion and how it was found (``serving_logs`` | ``alias_history`` | ``current``)."""
        if self._history is None:
            self._history = alias_history(self.client, self.cfg)
        version, how = day_champion(self.cfg, self.store, interval, self.client, self._history)
        if version not in self._loaded:
            self._loaded[version] = Champion(self.cfg, self.tracking_uri, version)
        return self._loaded[version], how
