"""Categorical columns of any type, cast to text the same way in training, comparison/monitoring and the
gateway (``ml_ops.scoring.category_text``), on a stranger's pipeline: a loans YAML with an integer
categorical column (``grade``) in a temporary include dir, its SQL naming :start/:end in a comment too."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml_ops import layout
from ml_ops.config import load_pipeline_by_name
from ml_ops.local.sim import load_source
from ml_ops.pipeline import dry_run
from ml_ops.pipeline.train import load_model_version, train_and_register
from ml_ops.scoring import as_category_text, category_text, model_input, score
from ml_ops.serving.errors import RequestError
from ml_ops.serving.fastpath import compile_pipeline
from ml_ops.serving.schema import InputSchema, convert, parse_json, table_from_payload
from tests.mlflow_store import fresh_store

D0 = date(2026, 3, 1)
DAYS = 5  # training.window_days 3 + holdout_days 1 + target.label_delay_days 1
GRADES = [1, 2, 3, 4, 5]

LOANS_YAML = """\
description: Predicts whether a loan defaults (a pipeline no test ships with the product)
owner: credit-ml
start_date: 2026-01-01
source:
  conn_id: loans_db
  sql: sql/loans_extract.sql
  timestamp_column: applied_at
  id_column: loan_id
validation:
  suite: expectations/loans.json
  history_days: 3
features:
  numeric: [amount, income]
  categorical: [grade, purpose]   # grade is an integer column: its values are labels
target:
  column: defaulted
  label_delay_days: 1
  label_available_column: label_available_at
model:
  estimator: sklearn.linear_model.LogisticRegression
  params: {max_iter: 500}
training:
  window_days: 3
  holdout_days: 1
  min_rows: 100
promotion:
  floors: {roc_auc: 0.6}
  bootstrap_samples: 200
"""

LOANS_SQL = """\
-- Loan applications of one day. The extract binds :start and :end to the day's interval; a comment
-- naming them (:start, :end) must not confuse the parameter check.
SELECT loan_id, applied_at, amount, income, grade, purpose, defaulted, label_available_at
FROM loans
WHERE applied_at >= :start AND applied_at < :end
ORDER BY applied_at, loan_id
"""


def _exists(column: str) -> dict:
    return {"type": "expect_column_to_exist", "kwargs": {"column": column}}


LOANS_SUITE = {
    "name": "loans",
    "meta": {"ml_ops_label_column": "defaulted", "ml_ops_categorical_columns": ["grade", "purpose"]},
    "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 50, "max_value": 100000}},
        *[_exists(c) for c in ("loan_id", "applied_at", "amount", "income", "grade", "purpose", "defaulted")],
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "loan_id"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount", "min_value": 0}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "grade", "value_set": GRADES}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "defaulted", "value_set": [0, 1]}},
    ],
}


def loans(days: int, rows_per_day: int = 300, seed: int = 11) -> pd.DataFrame:
    """Loan applications whose default risk rises with the (integer) grade, labelled a day later."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(days):
        day = datetime.combine(D0 + timedelta(days=i), datetime.min.time())
        n = rows_per_day
        applied = day + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s")
        grade = rng.choice(GRADES, n)
        purpose = rng.choice(["car", "home", "study"], n)
        income = rng.lognormal(10.5, 0.4, n)
        amount = rng.lognormal(9, 0.5, n)
        logit = -3.5 + 0.8 * grade + 0.6 * (purpose == "study") + 0.5 * np.log(amount / income)
        parts.append(
            pd.DataFrame(
                {
                    "loan_id": [f"l{day:%Y%m%d}-{j:04d}" for j in range(n)],
                    "applied_at": applied,
                    "amount": amount,
                    "income": income,
                    "grade": grade.astype("int64"),
                    "purpose": purpose,
                    "defaulted": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64"),
                    "label_available_at": applied + pd.Timedelta(days=1) - pd.Timedelta(minutes=5),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def world(s3_store, tmp_path_factory):
    """The loans pipeline dry-run over its source into the session's S3 endpoint (tests/unit/conftest.py), under
    its own scratch prefix, and a test MLflow store."""
    tmp = tmp_path_factory.mktemp("loans")
    include = tmp / "include"
    for sub in ("pipelines", "sql", "expectations"):
        (include / sub).mkdir(parents=True)
    (include / "pipelines" / "loans.yaml").write_text(LOANS_YAML)
    (include / "sql" / "loans_extract.sql").write_text(LOANS_SQL)
    (include / "expectations" / "loans.json").write_text(json.dumps(LOANS_SUITE, indent=2))
    db = tmp / "loans.db"
    load_source(f"sqlite:///{db}", "loans", loans(DAYS), timestamp_column="applied_at")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_INCLUDE_DIR", str(include))
    try:
        import sqlalchemy as sa

        cfg = load_pipeline_by_name("loans")
        store = s3_store
        tracking_uri = fresh_store(tmp)
        MlflowClient(tracking_uri).create_experiment("loans", artifact_location=str(tmp / "artifacts"))
        lines: list[str] = []
        report = dry_run.run(
            cfg,
            days=DAYS,
            end=D0 + timedelta(days=DAYS - 1),
            engine=sa.create_engine(f"sqlite:///{db}"),
            store=store,
            tracking_uri=tracking_uri,
            echo=lines.append,
        )
        yield {"cfg": cfg, "store": store, "tracking_uri": tracking_uri, "report": report, "out": "\n".join(lines)}
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def model(world):
    return load_model_version(world["tracking_uri"], "loans", world["report"].trained["version"])


@pytest.fixture(scope="module")
def holdout(world):
    """A features partition as compare and monitoring read it: grade still an integer column."""
    ds = (D0 + timedelta(days=DAYS - 2)).isoformat()
    df = world["store"].read_parquet(layout.partition(dry_run.scratch_config(world["cfg"]).prefix(), "features", ds))
    assert df["grade"].dtype == "int64"
    return df


def test_one_cast_for_every_type():
    assert category_text([3, 3.0, "3", None, True, 2.5]).tolist() == ["3", "3", "3", None, "True", "2.5"]
    assert category_text(pd.Series([3, 1, 3])).tolist() == ["3", "1", "3"]
    assert category_text(pd.Series([3.0, np.nan, -0.0])).tolist() == ["3", None, "0"]  # an int column with nulls
    assert category_text(pd.Series([1, None], dtype="Int64")).tolist() == ["1", None]
    assert category_text(pd.Series(["a", None, np.nan], dtype=object)).tolist() == ["a", None, None]
    assert category_text(pd.Series(["a", pd.NA], dtype="string")).tolist() == ["a", None]
    assert category_text(pd.Series([True, False])).tolist() == ["True", "False"]
    assert category_text(np.array([1, "a", 1.0, True, pd.NA], dtype=object)).tolist() == ["1", "a", "1", "True", None]
    df = pd.DataFrame({"grade": [1, 2], "amount": [1, 2]})
    cast = as_category_text(df, ["grade"])
    assert cast["grade"].tolist() == ["1", "2"] and cast["amount"].tolist() == [1, 2]
    assert df["grade"].tolist() == [1, 2]  # the caller's frame is left as it is


def test_a_stranger_pipeline_with_an_integer_categorical_trains(world, model):
    report, out = world["report"], world["out"]
    assert report.ok, out
    assert [d.validation for d in report.days] == ["passed"] * DAYS
    assert report.trained["metrics"]["roc_auc"] > 0.6 and "holdout metrics: roc_auc=" in out
    assert report.decision["promote"]
    inputs = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert inputs == {"amount": "double", "income": "double", "grade": "string", "purpose": "string"}
    pipeline = model.unwrap_python_model().pipeline
    grade_categories = pipeline.named_steps["preprocess"].named_transformers_["cat"][-1].categories_[0]
    assert grade_categories.tolist() == ["1", "2", "3", "4", "5"]  # labels, not numbers


def test_the_gateway_accepts_numbers_for_a_categorical_and_casts_them_as_training(model, holdout):
    schema = InputSchema.from_mlflow(model.metadata.get_input_schema())
    rows = holdout.iloc[[0] * 4][["amount", "income", "grade", "purpose"]].reset_index(drop=True)
    sent = [3, 3.0, "3", None]  # how different clients send grade 3 (and a missing grade), on one row
    records = [{**r, "grade": g} for r, g in zip(rows.to_dict("records"), sent, strict=True)]
    typed = convert(table_from_payload(parse_json(json.dumps({"dataframe_records": records}).encode())), schema)
    assert typed["grade"].tolist() == ["3", "3", "3", None]
    pipeline = model.unwrap_python_model().pipeline
    served = pipeline.predict_proba(pd.DataFrame(typed))[:, 1]  # the gateway's pipeline path
    assert served[0] == served[1] == served[2]
    batch = score(model, rows.assign(grade=[3, 3, 3, 3]))  # compare/monitoring with an integer column
    np.testing.assert_allclose(served[:3], batch[:3], rtol=1e-12)
    fast = compile_pipeline(pipeline)  # the gateway's numpy scorer: its categories are text too
    assert fast is not None
    np.testing.assert_allclose(fast(typed, len(records)), served, rtol=1e-9, atol=1e-12)
    for bad, why in (([3], "row 0 has list"), (float("nan"), "row 0 has float nan"), ({"g": 3}, "row 0 has dict")):
        payload = json.dumps({"dataframe_records": [{**records[0], "grade": bad}]}).encode()
        with pytest.raises(RequestError, match=f"column 'grade' expects string; {why}"):
            convert(table_from_payload(parse_json(payload)), schema)


def test_model_input_casts_as_training_did(model, holdout):
    cast = model_input(model, holdout)
    assert list(cast.columns) == ["amount", "income", "grade", "purpose"]
    assert set(cast["grade"]) <= {"1", "2", "3", "4", "5"}
    as_text = holdout.assign(grade=holdout["grade"].astype(str))
    as_float = holdout.assign(grade=holdout["grade"].astype("float64"))  # an integer column with nulls reads so
    expected = score(model, as_text)
    np.testing.assert_array_equal(score(model, holdout), expected)
    np.testing.assert_array_equal(score(model, as_float), expected)


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"amount": rng.normal(size=n), "grade": rng.choice(GRADES, n), "purpose": rng.choice(["a", "b"], n)}
    )
    df["defaulted"] = (df["amount"] + df["grade"] / 2 + rng.normal(size=n) > 1.5).astype(int)
    return df


@pytest.mark.parametrize(
    ("numeric", "categorical", "estimator", "message"),
    [
        (["amount", "purpose"], ["grade"], "sklearn.linear_model.LogisticRegression",
         "features.numeric: column 'purpose' holds values that are not numbers (300 of 300 training rows, e.g. "),
        (["amount", "grade"], ["grade"], "sklearn.linear_model.LogisticRegression",
         "features.categorical: column(s) ['grade'] also listed under features.numeric"),
        (["amount"], ["grade", "term"], "sklearn.linear_model.LogisticRegression",
         "features.categorical: the training data is missing column(s) ['term']"),
        (["amount"], ["grade"], "sklearn.naive_bayes.MultinomialNB",
         "model.estimator: sklearn.naive_bayes.MultinomialNB (model.params {}) failed to fit: ValueError: Negative"),
    ],
    ids=["text_under_numeric", "in_both_lists", "missing_column", "estimator_fails"],
)  # fmt: skip
def test_model_building_errors_name_the_yaml_field_and_column(tmp_path, numeric, categorical, estimator, message):
    df = _frame()
    with pytest.raises(ValueError) as failed:
        train_and_register(
            df.iloc[:300],
            df.iloc[300:],
            tracking_uri=fresh_store(tmp_path),
            experiment="loans",
            model_name="loans",
            target="defaulted",
            numeric=numeric,
            categorical=categorical,
            estimator=estimator,
            params={},
            data_uris={},
            tags={},
            artifact_location=str(tmp_path / "artifacts"),
        )
    assert message in str(failed.value), str(failed.value)
