"""The offline gate is the ticket to a canary (TFX's blessing and Pusher: an unblessed model is not pushed).

A version may take live traffic only if its champion/challenger comparison (``ml_ops.pipeline.compare``)
decided "promote" against the champion it would now be judged against. Its decision is read from the
version's tags (``decision``, ``compared_to``, ``decision_reason``, written by ``compare_and_record``), or,
without them, from its latest record in the decisions log (``layout.decision_log``). A version that was
rejected, never compared, or compared with another champion can only be rolled out with the trigger's
Params ``force: true`` and a non-empty ``reason``; the override is recorded (decisions log, version tags,
alert). Pure: the caller reads tags and log and writes the records (``ml_ops.rollout.canary.start``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

FORCED_KIND = "canary_forced"  # ``kind`` of a forced rollout's record in the decisions log


class GateRefused(ValueError):
    """The version has no ticket (and no valid override): retrying will not change the answer."""


@dataclass(frozen=True)
class Ticket:
    version: int
    champion: int | None  # the champion the canary would be judged against
    decision: str | None  # "promote" | "reject" | None (never compared)
    compared_to: int | None  # the champion of that comparison (None: none then, or unknown)
    reason: str  # the gate's reason, in words
    source: str  # "version tags" | "decision log" | "none"

    @property
    def passed(self) -> bool:
        return self.decision == "promote" and self.champion is not None and self.compared_to == self.champion

    def describe(self) -> str:
        if self.decision is None:
            return f"v{self.version} has no gate decision (never compared with a champion)"
        if self.decision != "promote":
            return f"v{self.version} lost its gate ({self.source}): {self.reason or self.decision}"
        if self.compared_to != self.champion:
            against = "no champion" if self.compared_to is None else f"v{self.compared_to}"
            return f"v{self.version} passed its gate against {against}, but the champion is now v{self.champion}"
        return f"v{self.version} passed its gate against champion v{self.champion}: {self.reason}"


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def ticket(version: int, champion: int | None, tags: Mapping[str, str], log: Iterable[dict]) -> Ticket:
    """The gate decision of ``version`` from its version tags, else its latest decisions-log record."""
    if tags.get("decision"):
        return Ticket(
            version,
            champion,
            str(tags["decision"]),
            _int(tags.get("compared_to")),
            str(tags.get("decision_reason", "")),
            "version tags",
        )
    records = [
        r for r in log if r.get("kind") is None and _int(r.get("challenger_version")) == version and "promote" in r
    ]
    if records:
        last = records[-1]
        return Ticket(
            version,
            champion,
            "promote" if last["promote"] else "reject",
            _int(last.get("champion_version")),
            str(last.get("reason", "")),
            "decision log",
        )
    return Ticket(version, champion, None, None, "", "none")


def admit(gate: Ticket, *, force: bool, reason: str | None) -> bool:
    """True when the canary may start because it is forced past its gate, False when the gate passed.

    Raises ``GateRefused`` without a ticket and without a valid override (``force`` with a reason)."""
    why = (reason or "").strip()
    if force and not why:
        raise GateRefused("Params force: true needs a non-empty reason (it is recorded and alerted)")
    if gate.passed:
        return False
    if not force:
        raise GateRefused(f"{gate.describe()}; a canary needs a passed gate, or the Params force: true with a reason")
    return True


def forced_record(pipeline: str, gate: Ticket, *, reason: str, run_id: str) -> dict:
    """The decisions-log record of a forced rollout (``key`` makes a retried task log it once)."""
    return {
        "key": f"{pipeline}:v{gate.version}:{FORCED_KIND}:{run_id}",
        "kind": FORCED_KIND,
        "pipeline": pipeline,
        "challenger_version": gate.version,
        "champion_version": gate.champion,
        "promote": False,
        "forced": True,
        "gate_decision": gate.decision,
        "gate_compared_to": gate.compared_to,
        "gate_reason": gate.reason,
        "force_reason": reason.strip(),
        "reason": f"canary forced past the gate ({gate.describe()}): {reason.strip()}",
        "airflow_run_id": run_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
