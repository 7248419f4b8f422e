"""The offline gate as the ticket to a canary: reading the decision, refusing, forcing (pure)."""

from __future__ import annotations

import pytest

from ml_ops.rollout.gate import FORCED_KIND, GateRefused, admit, forced_record, ticket

PROMOTED = {"decision": "promote", "compared_to": "1", "decision_reason": "promote: all 3 checks passed"}
REJECTED = {"decision": "reject", "compared_to": "1", "decision_reason": "reject: significant:roc_auc -0.0071 vs 0"}


def log_record(version: int, promote: bool, champion: int | None = 1) -> dict:
    """The fields of a compare record in decisions/log.jsonl (ml_ops.pipeline.steps.compare_step)."""
    return {
        "key": f"fraud:v{version}",
        "challenger_version": version,
        "champion_version": champion,
        "promote": promote,
        "reason": "promote: all 3 checks passed" if promote else "reject: min_improvement:roc_auc",
    }


def test_a_version_that_passed_against_the_current_champion_has_its_ticket():
    t = ticket(2, 1, PROMOTED, [])
    assert t.passed and t.source == "version tags" and t.compared_to == 1
    assert admit(t, force=False, reason=None) is False  # not forced: nothing to record


@pytest.mark.parametrize(
    "tags, log, champion, words",
    [
        (REJECTED, [], 1, "v2 lost its gate (version tags): reject: significant:roc_auc"),
        ({}, [], 1, "v2 has no gate decision (never compared with a champion)"),
        (PROMOTED, [], 3, "v2 passed its gate against v1, but the champion is now v3"),
        ({**PROMOTED, "compared_to": "none"}, [], 1, "passed its gate against no champion, but the champion is now v1"),
        ({}, [log_record(2, False)], 1, "v2 lost its gate (decision log): reject: min_improvement"),
    ],
    ids=["rejected", "never_compared", "stale", "first_model_then", "rejected_in_the_log"],
)
def test_without_a_ticket_the_canary_is_refused_naming_why(tags, log, champion, words):
    t = ticket(2, champion, tags, log)
    assert not t.passed
    with pytest.raises(GateRefused, match="force: true with a reason") as refused:
        admit(t, force=False, reason="because")
    assert words in str(refused.value)


def test_the_decision_log_is_read_when_the_tags_are_missing_and_its_latest_record_wins():
    log = [log_record(2, False), log_record(3, True), log_record(2, True)]
    assert ticket(2, 1, {}, log).passed and ticket(2, 1, {}, log).source == "decision log"
    forced = forced_record("fraud", ticket(4, 1, {}, []), reason="hotfix", run_id="r")
    assert not ticket(4, 1, {}, [forced]).passed  # a forced rollout is not a gate decision
    assert ticket(2, 1, REJECTED, log).decision == "reject"  # the version's own tags come first


def test_force_needs_a_reason_even_when_the_gate_passed():
    for reason in (None, "", "   "):
        with pytest.raises(GateRefused, match="non-empty reason"):
            admit(ticket(2, 1, REJECTED, []), force=True, reason=reason)
        with pytest.raises(GateRefused, match="non-empty reason"):
            admit(ticket(2, 1, PROMOTED, []), force=True, reason=reason)


def test_forcing_a_version_without_a_ticket_is_admitted_and_recorded():
    t = ticket(2, 1, REJECTED, [])
    assert admit(t, force=True, reason=" hotfix for INC-42 ") is True
    assert admit(ticket(2, 1, PROMOTED, []), force=True, reason="x") is False  # passed anyway: not an override
    record = forced_record("fraud", t, reason=" hotfix for INC-42 ", run_id="manual__1")
    assert record["key"] == f"fraud:v2:{FORCED_KIND}:manual__1" and record["kind"] == FORCED_KIND
    assert (record["challenger_version"], record["champion_version"], record["forced"]) == (2, 1, True)
    assert record["force_reason"] == "hotfix for INC-42" and record["gate_decision"] == "reject"
    assert record["reason"].startswith("canary forced past the gate (v2 lost its gate")
    assert record["promote"] is False  # readers of the log (demo) see no promotion decision
