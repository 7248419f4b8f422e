from __future__ import annotations

import pandas as pd
import pytest

from ml_ops.pipeline.validate import load_suite
from tests.unit.pipeline.validate.frames import FRAUD_SUITE, fraud_frame


@pytest.fixture(scope="session")
def suite() -> dict:
    return load_suite(FRAUD_SUITE)


@pytest.fixture(scope="session")
def history() -> list[pd.DataFrame]:
    return [fraud_frame(300, f"2026-01-0{d}", seed=d) for d in range(1, 5)] + [fraud_frame(280, "2025-12-31", 9)]
