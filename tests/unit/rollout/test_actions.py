"""The canary's state machine, branch by branch (pure)."""

from __future__ import annotations

import pytest

from ml_ops.config import Canary
from ml_ops.rollout.actions import Action, next_action

POLICY = Canary(steps=[10, 25, 50, 100], max_extensions=2)
LAST = len(POLICY.steps) - 1


def act(outcome: str, step: int = 0, extension: int = 0, **kw) -> Action:
    return next_action(outcome, step, extension, POLICY, score=kw.pop("score", 100), detail="the judge's words", **kw)


@pytest.mark.parametrize("step", range(LAST))
def test_a_passed_step_advances_to_the_next_with_no_extension(step):
    for extension in (0, 2):
        a = act("pass", step, extension)
        assert (a.kind, a.step, a.extension, a.waits) == ("advance", step + 1, 0, True)
        assert (
            a.reason == f"step {step + 1}/4 ({POLICY.steps[step]}%) passed (score 100); now {POLICY.steps[step + 1]}%"
        )


def test_the_last_step_passed_promotes():
    a = act("pass", LAST, 1, version=7)
    assert (a.kind, a.step, a.extension, a.waits) == ("promote", LAST, 1, False)
    assert a.reason == "canary v7 passed all 4 steps; last: the judge's words"
    assert act("pass", LAST).reason.startswith("canary passed all 4 steps")


@pytest.mark.parametrize("outcome", ["marginal", "nodata"])
@pytest.mark.parametrize("step", [0, LAST])
def test_marginal_or_nodata_extends_while_extensions_are_left(outcome, step):
    for extension in range(POLICY.max_extensions):
        a = act(outcome, step, extension, score=80)
        assert (a.kind, a.step, a.extension, a.waits) == ("extend", step, extension + 1, True)
        assert f"is {outcome}: extending the step ({extension + 1} of 2)" in a.reason


@pytest.mark.parametrize(
    "outcome, why",
    [("marginal", "still marginal at the step's deadline"), ("nodata", "too little data by the step's deadline")],
)
def test_marginal_or_nodata_at_the_deadline_rolls_back(outcome, why):
    a = act(outcome, 2, POLICY.max_extensions)
    assert (a.kind, a.step, a.extension, a.waits) == ("roll_back", 2, 2, False)
    assert a.reason == f"step 3/4 (50%) {why}: the judge's words"


@pytest.mark.parametrize("step, extension", [(0, 0), (1, 1), (LAST, 2)])
def test_a_fail_rolls_back_at_once_whatever_is_left(step, extension):
    a = act("fail", step, extension)
    assert (a.kind, a.step, a.waits) == ("roll_back", step, False)
    assert a.reason.endswith("failed: the judge's words")


def test_no_extensions_allowed_means_marginal_rolls_back_at_once():
    strict = Canary(max_extensions=0)
    assert next_action("marginal", 0, 0, strict).kind == "roll_back"
    assert next_action("nodata", 0, 0, strict).kind == "roll_back"


def test_a_single_step_policy_promotes_on_its_first_pass():
    assert next_action("pass", 0, 0, Canary(steps=[100])).kind == "promote"


@pytest.mark.parametrize(
    "args, match",
    [
        (("passed", 0, 0), "unknown verdict outcome"),
        (("pass", 4, 0), "outside the policy's 4 steps"),
        (("pass", -1, 0), "outside the policy's 4 steps"),
        (("marginal", 0, 3), "extension 3 outside 0..2"),
    ],
)
def test_impossible_inputs_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        next_action(*args, POLICY)
