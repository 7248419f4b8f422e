"""The stored renderings: re-validating the same partition writes the same bytes."""

from __future__ import annotations

import json

from ml_ops.pipeline.validate import validate_frame
from tests.unit.pipeline.validate.frames import assert_well_formed, fraud_frame


def test_report_and_result_are_byte_identical_on_rerun(suite, history):
    df = fraud_frame(seed=42)
    df["amount"] = df["amount"].astype(str)
    df.loc[:4, "amount"] = "n/a"  # failures with examples and a GX-reported error on the page
    df.loc[:29, "country"] = "XX"
    first, second = (validate_frame(df, suite, history=history, label="fraud ds=2026-01-05") for _ in range(2))
    assert not first.success
    assert first.statistics["gx_seconds"] >= 0  # timings stay available to callers ...
    page = first.to_html()
    assert page == second.to_html()  # ... but not in report.html
    assert "_seconds" not in page
    assert json.dumps(first.to_json(), sort_keys=True) == json.dumps(second.to_json(), sort_keys=True)
    assert "_seconds" not in json.dumps(first.to_json())
    assert_well_formed(page)
