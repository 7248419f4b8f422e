"""SQL files are checked the way extract runs them: comments and quoted text never bind parameters."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from ml_ops.pipeline import sql
from ml_ops.pipeline.extract import read_interval

COMMENTED = """-- One day of loans; extract binds :start and :end (and this comment must not bind them again).
/* a block comment with :ignored */
SELECT id, ts, grade, ':literal' AS note, "odd:name" FROM loans
WHERE ts >= :start AND ts < :end -- half-open: [:start, :end)
"""


def test_comments_and_literals_do_not_bind():
    assert sql.bound_parameters(COMMENTED) == {"start", "end"}
    sql.check(COMMENTED)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT * FROM t WHERE ts >= :start", r"does not bind \[':end'\]"),
        (
            "SELECT * FROM t WHERE ts >= :start AND ts < :end AND region = :region",
            r"unknown parameter\(s\) \[':region'\]",
        ),
        ("-- only :start and :end in a comment\nSELECT * FROM t", "does not bind"),
        ("-- nothing but a comment\n", "empty"),
    ],
)
def test_wrong_parameters_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        sql.check(text)


def test_extract_runs_a_commented_query(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'loans.db'}")
    rows = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "ts": ["2026-01-01 10:00:00", "2026-01-01 23:00:00", "2026-01-02 01:00:00"],
            "grade": [3, 1, 2],
        }
    )
    rows.to_sql("loans", engine, index=False)
    engine.dispose()
    df = read_interval(engine, COMMENTED, datetime(2026, 1, 1), datetime(2026, 1, 2), parse_dates=["ts"])
    assert df["id"].tolist() == [1, 2]
    assert df["note"].tolist() == [":literal", ":literal"]  # the literal's colon reached the database unbound
