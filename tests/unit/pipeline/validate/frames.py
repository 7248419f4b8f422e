"""Generated frames of the fraud source schema and small helpers shared by the validation tests."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from ml_ops.local.sim.transactions import CATEGORIES as SIM_CATEGORIES
from ml_ops.pipeline.validate import ValidationResult

ROOT = Path(__file__).resolve().parents[4]
# The fraud source's suite as it was when the label came in the transaction row (is_fraud, label_available_at):
# the validation tests' schema, with a label column for the label-rate checks. The shipped fraud suite has no
# label since fraud's labels arrive in their own table.
FRAUD_SUITE = ROOT / "tests" / "data" / "expectations" / "fraud_with_label.json"
TUMORS_SUITE = ROOT / "include" / "expectations" / "tumors.json"
CATEGORIES = list(SIM_CATEGORIES)  # the simulator's merchant categories, which the fraud suite lists


def fraud_frame(n: int = 300, day: str = "2026-01-05", seed: int = 0, fraud_rate: float = 0.02) -> pd.DataFrame:
    """A realistic day of the fraud source schema (built here so this test does not depend on ml_ops.local.sim)."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(day) + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
    return pd.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i:07d}" for i in range(n)],
            "ts": ts,
            "customer_id": [f"c{x:05d}" for x in rng.integers(0, 5000, n)],
            "amount": np.round(rng.lognormal(3.5, 1.0, n).clip(0.01, 49_999), 2),
            "merchant_category": rng.choice(CATEGORIES, n),
            "channel": rng.choice(["pos", "online", "atm", "contactless"], n),
            "country": rng.choice(["DE", "FR", "NL", "US", "GB"], n),
            "device": rng.choice(["mobile", "desktop", "terminal", "unknown"], n),
            "customer_age": rng.integers(18, 90, n),
            "account_age_days": rng.integers(0, 5000, n),
            "is_fraud": (rng.random(n) < fraud_rate).astype("int64"),
            "label_available_at": ts + pd.to_timedelta(rng.integers(1, 30 * 86_400, n), unit="s"),
        }
    )


def failed(result: ValidationResult) -> set[tuple[str, str | None]]:
    return {(f.expectation_type, f.column) for f in result.failures}


class _TagChecker(HTMLParser):
    VOID = frozenset({"meta", "br", "hr", "img", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def assert_well_formed(page: str) -> None:
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == [], (checker.errors, checker.stack)
