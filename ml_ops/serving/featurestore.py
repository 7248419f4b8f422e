"""The gateway's online features: its online store, a raw request's derived features off the event loop, and
materialisation when a version is loaded or a newer raw day appears.

The store (``MLOPS_ONLINE_STORE``, ``ml_ops.features.store``) is opened at start; if it cannot be, raw-event
requests of pipelines with history features answer 503 naming it (model-input requests are untouched) and the
gateway tries again at the next materialisation check. Store calls run in one thread per pipeline, batched like
model calls (``ml_ops.serving.runner.ModelRunner``): the raw requests queued while one call runs go together in
the next, as one store round trip (for Redis, one script call) and one feature computation, so concurrent
requests share the store's per-call cost and a slow store delays only the raw requests waiting for it, never the
event loop. A store that fails fails every request of its call with 503 at once.

Materialisation (``ml_ops.features.materialize``, a merge safe beside live traffic) runs in a background thread:
for each pipeline with history features, when its champion or canary version loaded by this process changes
(at start too) and, every ``MLOPS_ONLINE_MATERIALIZE_SECONDS``, when a newer validated raw day exists. Its last
outcome is shown in ``/pipelines`` (``online``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import numpy as np

from ml_ops.features.online import OnlineFeatures, entity_keyer
from ml_ops.features.store import OnlineStore, StoreUnavailable, open_store
from ml_ops.privacy import PrivacyKeyMissing, read_key
from ml_ops.serving.errors import RequestError
from ml_ops.serving.runner import ModelRunner
from ml_ops.serving.settings import Settings

log = logging.getLogger("ml_ops.serving.features")
CHECK_SECONDS = 2.0  # how often the materialiser looks at the loaded versions
BATCH_EVENTS = 512  # events per store call at most


def _batched(online: OnlineFeatures):
    """The runner's call: the generated columns of the queued requests' events, as one structured array (a row per
    event: the runner hands each request its slice)."""

    def compute(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        amounts = columns["amount"] if online.with_amount else None
        cols, _ = online.compute(columns["entity"], columns["id"], columns["ts"], amounts)
        rows = np.empty(n, dtype=[(c, cols[c].dtype) for c in online.columns])
        for c in online.columns:
            rows[c] = cols[c]
        return rows

    return compute


class GatewayFeatures:
    def __init__(self, settings: Settings, object_store, resolver):
        self.settings, self.object_store, self.resolver = settings, object_store, resolver
        self.store: OnlineStore | None = None
        self.error: str | None = None if settings.online_store else "MLOPS_ONLINE_STORE is not set"
        self._features: dict[str, tuple[OnlineFeatures, ModelRunner]] = {}
        self._materialized: dict[str, dict] = {}
        self._seen_versions: dict[str, tuple] = {}
        self._checked_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------------------------------
    def open(self) -> OnlineStore | None:
        """The store, opened now if it is not yet (None when it is not configured or cannot be opened)."""
        if self.store is not None or not self.settings.online_store:
            return self.store
        with self._lock:
            if self.store is None:
                try:
                    store = open_store(self.settings.online_store, namespace=self.settings.online_namespace)
                    store.ping()
                except (StoreUnavailable, ValueError, ImportError) as exc:
                    self.error = str(exc)
                    log.error("online store not available: %s", exc)
                    return None
                self.store, self.error = store, None
                log.info("online store %s open", store.label)
        return self.store

    def start(self) -> None:
        if not self.settings.online_store:
            return
        self.open()
        self._thread = threading.Thread(target=self._run, name="online-materialize", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.store is not None:
            self.store.close()

    # ---- the request path ------------------------------------------------------------------------------
    def _online(self, cfg) -> tuple[OnlineFeatures, ModelRunner]:
        found = self._features.get(cfg.name)
        if found is None or found[0].cfg is not cfg:
            store, key = None, None
            if cfg.features.entity_column:
                store = self.open()
                if store is None:
                    raise RequestError(
                        503,
                        f"raw events of pipeline {cfg.name!r} need the online store, which is not available: "
                        f"{self.error}; send the model's inputs instead (X-Input: model)",
                        kind="unavailable",
                    )
                try:
                    key = entity_keyer(cfg, read_key(cfg.privacy.key_name))
                except PrivacyKeyMissing as exc:
                    raise RequestError(503, str(exc), kind="unavailable") from None
            online = OnlineFeatures(cfg, store, key)
            runner = ModelRunner(
                _batched(online),
                name=f"online-{cfg.name}",
                max_rows=BATCH_EVENTS,
                threads=None,
                shared_errors=(StoreUnavailable,),
            )
            found = self._features[cfg.name] = (online, runner)
        return found

    async def compute(self, cfg, raw) -> dict:
        """The derived columns of a checked raw request (``ml_ops.serving.rawinput.RawEvents``), recorded in
        the online store; 503 naming the store when it fails."""
        online, runner = self._online(cfg)
        if not online.needs_store:
            return online.compute(None, raw.ids, raw.ts, raw.amounts)[0]
        cold = self.cold(cfg.name)
        if cold:  # a cold entity's features would be computed without its history: a silent skew
            raise RequestError(
                503, f"{cold}; retry in a few seconds, or send the model's inputs (X-Input: model)", kind="unavailable"
            )
        n = len(raw.ids)
        entities, ids = np.empty(n, object), np.empty(n, object)
        entities[:], ids[:] = raw.entities, raw.ids
        columns = {
            "entity": entities,
            "id": ids,
            "ts": raw.ts,
            "amount": raw.amounts if raw.amounts is not None else np.full(n, np.nan),
        }
        try:
            rows, _, _ = await runner.predict(columns, n)
        except StoreUnavailable as exc:
            raise RequestError(
                503, f"{exc}; send the model's inputs instead (X-Input: model)", kind="unavailable"
            ) from None
        return {c: rows[c] for c in online.columns}

    # ---- materialisation -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            try:
                self.materialize_due()
            except Exception:  # noqa: BLE001 - never let the thread die
                log.exception("online materialisation check failed")

    def materialize_due(self) -> None:
        """Materialise every pipeline whose loaded versions changed, or which has a newer validated raw day."""
        from ml_ops.features.materialize import materialize, newest_validated_day

        for name in self.resolver.names:
            dep = self.resolver.get(name)
            if dep is None or dep.cfg.features.entity_column is None or dep.champion is None:
                continue
            store = self.open()
            if store is None:
                continue
            versions = (dep.champion.version, dep.canary.version if dep.canary else None)
            now = time.monotonic()
            changed = self._seen_versions.get(name) != versions
            every = self.settings.online_materialize_seconds
            due = every > 0 and now - self._checked_at.get(name, 0.0) >= every
            if not (changed or due):
                continue
            self._seen_versions[name], self._checked_at[name] = versions, now
            previous = self._materialized.get(name, {})
            try:
                if not changed:
                    newest = newest_validated_day(self.object_store, dep.cfg)
                    if newest is None or newest == previous.get("through"):
                        continue
                result = materialize(dep.cfg, self.object_store, store, read_key(dep.cfg.privacy.key_name))
                result["trigger"] = f"versions {versions}" if changed else "newer raw day"
            except Exception as exc:  # noqa: BLE001 - shown in /pipelines, tried again at the next change or period
                log.error("%s: online materialisation failed: %s: %s", name, type(exc).__name__, exc)
                result = {**previous, "error": f"{type(exc).__name__}: {exc}"}
            result["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._materialized[name] = result

    def cold(self, name: str) -> str | None:
        """Why raw requests of ``name`` cannot be served yet, or None: the store must have been materialised by this
        process once (at the first load of a champion), or events would be scored without their entity's history."""
        m = self._materialized.get(name)
        if m is None:
            return f"pipeline {name!r}: the online store is being materialised from the latest raw partitions"
        if m.get("through") is not None or not m.get(
            "error"
        ):  # done once (a later failure keeps it warm), or no history yet
            return None
        return f"pipeline {name!r}: the online store could not be materialised: {m['error']}"

    def ready(self) -> tuple[bool, str | None]:
        """For /ready: every loaded pipeline that keeps history online has its store materialised."""
        if not self.settings.online_store:
            return True, None
        for name in self.resolver.names:
            dep = self.resolver.get(name)
            if dep is None or dep.champion is None or dep.cfg.features.entity_column is None:
                continue
            cold = self.cold(name)
            if cold:
                return False, cold
        return True, None

    def status(self, name: str, cfg) -> dict:
        if cfg.features.entity_column is None:
            return {"store": None, "needed": False}
        m = self._materialized.get(name)
        return {
            "store": self.store.label if self.store else None,
            "needed": True,
            "error": self.error,
            "materialized": None
            if m is None
            else {k: m.get(k) for k in ("through", "days", "events", "new", "at", "trigger", "error", "seconds")},
        }
