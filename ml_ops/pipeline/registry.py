"""Alias-based promotion with an auditable history (MLflow keeps no alias history).

History lives in the registered-model tag `<alias>_history` (e.g. `champion_history`): a JSON list of
{"version", "at", "reason", "action"} entries, oldest first, bounded to `HISTORY_MAX_ENTRIES`.
Rollback replays that list as a stack: promote pushes a version, rollback pops the current one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml_ops import layout

HISTORY_MAX_ENTRIES = 30
_HISTORY_MAX_CHARS = 4800  # registered-model tag values are limited (5000 chars on some stores)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _history_key(alias: str) -> str:
    return f"{alias}_history"


# What MLflow answers when the registered model or the alias does not exist (REST and SQL stores alike).
# Anything else (INTERNAL_ERROR for a refused connection, TEMPORARILY_UNAVAILABLE, ...) is not "absent".
_ABSENT_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def is_absent(exc: MlflowException) -> bool:
    """MLflow's answer means "no such model / alias / version", not a failure to answer."""
    return exc.error_code in _ABSENT_CODES


class RegistryUnreachable(RuntimeError):
    """The registry could not answer; a step must fail (and retry), never read this as "no version"."""


def current_version(client: MlflowClient, model_name: str, alias: str = layout.CHAMPION) -> int | None:
    """Version currently holding `alias`; None only when the model or the alias does not exist.

    Raises ``RegistryUnreachable`` for any other failure: treating an outage as "no champion yet" could
    register a duplicate version or promote without a comparison."""
    try:
        return int(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if is_absent(exc):
            return None
        raise RegistryUnreachable(
            f"MLflow registry lookup of {model_name}@{alias} failed ({exc.error_code}): {exc}"
        ) from exc


def get_history(client: MlflowClient, model_name: str, alias: str = layout.CHAMPION) -> list[dict]:
    raw = client.get_registered_model(model_name).tags.get(_history_key(alias))
    if not raw:
        return []
    try:
        history = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"registered model {model_name!r}: tag {_history_key(alias)!r} is not JSON") from exc
    return history if isinstance(history, list) else []


def _entry(version: int, at: str, reason: str, action: str, by: str | None) -> dict:
    entry = {"version": version, "at": at, "reason": reason, "action": action}
    return {**entry, "by": by} if by else entry


def _append_history(client: MlflowClient, model_name: str, alias: str, entry: dict) -> None:
    history = get_history(client, model_name, alias) + [entry]
    history = history[-HISTORY_MAX_ENTRIES:]
    while len(history) > 1 and len(json.dumps(history)) > _HISTORY_MAX_CHARS:
        history = history[1:]  # drop oldest entries first
    client.set_registered_model_tag(model_name, _history_key(alias), json.dumps(history))


def _stack(history: list[dict]) -> list[int]:
    """Replay history: promotions push, rollbacks pop back to the restored version."""
    stack: list[int] = []
    for e in history:
        v = int(e["version"])
        if e.get("action") == "rollback":
            if stack:
                stack.pop()  # the version rolled back from
            if not stack or stack[-1] != v:
                stack.append(v)
        elif not stack or stack[-1] != v:
            stack.append(v)
    return stack


def _exists(client: MlflowClient, model_name: str, version: int) -> bool:
    try:
        client.get_model_version(model_name, str(version))
        return True
    except MlflowException as exc:
        if is_absent(exc):
            return False
        raise RegistryUnreachable(f"MLflow registry lookup of {model_name} v{version} failed: {exc}") from exc


def promote(
    client: MlflowClient,
    model_name: str,
    version: int | str,
    *,
    reason: str,
    alias: str = layout.CHAMPION,
    by: str | None = None,
) -> int | None:
    """Point `alias` at `version`; returns the version that held it before (None if none or if
    `version` already held it: no-op, but a missing history entry is repaired). ``by``: who asked (the
    Airflow user, or the run that did it), kept in the history and on the version for audit."""
    version = int(version)
    client.get_model_version(model_name, str(version))  # fail early, naming the version
    previous = current_version(client, model_name, alias)
    history = get_history(client, model_name, alias)
    if previous == version:
        if not history or int(history[-1]["version"]) != version:  # crash after alias move
            _append_history(client, model_name, alias, _entry(version, _now(), reason, "promote", by))
        return None
    at = _now()
    client.set_registered_model_alias(model_name, alias, str(version))
    _append_history(client, model_name, alias, _entry(version, at, reason, "promote", by))
    client.set_model_version_tag(model_name, str(version), f"promoted_to_{alias}_at", at)
    client.set_model_version_tag(model_name, str(version), "promotion_reason", reason[:5000])
    if by:
        client.set_model_version_tag(model_name, str(version), "promoted_by", by[:5000])
    if previous is not None:
        client.set_model_version_tag(model_name, str(previous), "replaced_by", str(version))
        client.set_model_version_tag(model_name, str(previous), "replaced_at", at)
    return previous


def previous_champion(client: MlflowClient, model_name: str, alias: str = layout.CHAMPION) -> int | None:
    """The version a rollback would restore: the last earlier holder that still exists."""
    current = current_version(client, model_name, alias)
    for v in reversed(_stack(get_history(client, model_name, alias))):
        if v != current and _exists(client, model_name, v):
            return v
    return None


def rollback(
    client: MlflowClient, model_name: str, *, reason: str, alias: str = layout.CHAMPION, by: str | None = None
) -> int:
    """Move `alias` back to the previous holder; records it (and ``by``, who asked) in history and on both
    versions."""
    target = previous_champion(client, model_name, alias)
    if target is None:
        raise ValueError(f"registered model {model_name!r}: no previous {alias!r} in history to roll back to")
    current = current_version(client, model_name, alias)
    at = _now()
    client.set_registered_model_alias(model_name, alias, str(target))
    _append_history(
        client,
        model_name,
        alias,
        {**_entry(target, at, reason, "rollback", by), "from": current},
    )
    if current is not None:
        client.set_model_version_tag(model_name, str(current), "rolled_back_at", at)
        client.set_model_version_tag(model_name, str(current), "rollback_reason", reason[:5000])
        if by:
            client.set_model_version_tag(model_name, str(current), "rolled_back_by", by[:5000])
    client.set_model_version_tag(model_name, str(target), f"restored_to_{alias}_at", at)
    return target
