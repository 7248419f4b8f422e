"""The canary's state machine: what to do after a step is judged, as a pure function.

``next_action(verdict, step, extension, policy)`` -> ``Action``: advance to the next step, extend the
current one (wait one more step length, the data accumulating from the step's start), promote, or roll
back, with the reason in words. The canary operator only carries the action out (writes through
``ml_ops.rollout.canary``, defers, alerts), so every branch is unit-tested without Airflow.

    pass      not the last step -> advance (step + 1, extension 0); the last step -> promote
    marginal  extensions left -> extend (extension + 1); none left -> roll back ("still marginal")
    nodata    extensions left -> extend; none left -> roll back ("too little data": no data is not a pass)
    fail      roll back at once
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ml_ops.config import Canary

ActionKind = Literal["advance", "extend", "promote", "roll_back"]
OUTCOMES = ("pass", "marginal", "fail", "nodata")


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    step: int  # advance: the step to run now; extend: the same step; promote / roll_back: the step judged
    extension: int  # extensions of ``step`` so far after this action (0 after advance)
    reason: str

    @property
    def waits(self) -> bool:
        """Another judgement follows (advance, extend); otherwise the canary ends (promote, roll_back)."""
        return self.kind in ("advance", "extend")


def where(step: int, policy: Canary) -> str:
    return f"step {step + 1}/{len(policy.steps)} ({policy.steps[step]}%)"


def next_action(
    outcome: str,
    step: int,
    extension: int,
    policy: Canary,
    *,
    score: float = 0.0,
    detail: str = "",
    version: int | None = None,
) -> Action:
    """The action after step ``step`` (0-based), judged after ``extension`` extensions, came out ``outcome``.

    ``score`` and ``detail`` (the judge's score and reason) and ``version`` only go into the reason text."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown verdict outcome {outcome!r}; expected one of {OUTCOMES}")
    if not 0 <= step < len(policy.steps):
        raise ValueError(f"step {step} outside the policy's {len(policy.steps)} steps")
    if not 0 <= extension <= policy.max_extensions:
        raise ValueError(f"extension {extension} outside 0..{policy.max_extensions}")
    here = where(step, policy)
    if outcome == "pass":
        if step + 1 < len(policy.steps):
            return Action("advance", step + 1, 0, f"{here} passed (score {score:.0f}); now {policy.steps[step + 1]}%")
        subject = f"canary v{version}" if version is not None else "canary"
        return Action("promote", step, extension, f"{subject} passed all {len(policy.steps)} steps; last: {detail}")
    if outcome in ("marginal", "nodata") and extension < policy.max_extensions:
        return Action(
            "extend",
            step,
            extension + 1,
            f"{here} is {outcome}: extending the step ({extension + 1} of {policy.max_extensions})",
        )
    why = {
        "nodata": "too little data by the step's deadline",
        "marginal": "still marginal at the step's deadline",
    }.get(outcome, "failed")
    return Action("roll_back", step, extension, f"{here} {why}: {detail}")
