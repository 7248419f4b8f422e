"""Raw events at the gateway: every refusal is a 4xx naming the column (and its YAML field) and the row."""

from __future__ import annotations

import numpy as np
import pytest

from ml_ops.config import load_pipeline_by_name
from ml_ops.serving.errors import RequestError
from ml_ops.serving.rawinput import RawColumns, input_mode, parse_raw
from ml_ops.serving.schema import table_from_payload

CFG = load_pipeline_by_name("fraud")
COLUMNS = RawColumns.of(CFG)
INPUTS = [*CFG.features.numeric, *CFG.generated_features, *CFG.features.categorical]
EVENT = {
    "transaction_id": "t1",
    "ts": "2026-03-02T10:15:00Z",
    "customer_id": "c17",
    "amount": 42.5,
    "merchant_category": "grocery",
    "channel": "pos",
    "country": "DE",
    "device": "chip",
    "customer_age": 41,
    "account_age_days": 800,
}


def parse(*events):
    return parse_raw(table_from_payload({"dataframe_records": list(events)}), CFG, COLUMNS, INPUTS)


def refused(*events) -> RequestError:
    with pytest.raises(RequestError) as exc:
        parse(*events)
    assert 400 <= exc.value.status < 500
    return exc.value


def test_a_raw_event_is_parsed_and_its_timestamp_kept_for_the_log():
    raw = parse(EVENT, {**EVENT, "transaction_id": 7, "ts": "2026-03-02T12:15:00+02:00", "amount": None})
    assert raw.ids == ["t1", "7"] and raw.entities == ["c17", "c17"]
    assert raw.ts[0] == raw.ts[1]  # an offset is converted to UTC
    assert np.isnan(raw.amounts[1])
    assert set(raw.table.columns) == {*CFG.features.numeric, *CFG.features.categorical, "transaction_id", "customer_id"}
    assert raw.logged["event_ts"] == raw.ts.tolist() and raw.logged_dtypes["event_ts"].startswith("datetime64")


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({k: v for k, v in EVENT.items() if k != "customer_id"}, "'customer_id' (features.entity_column)"),
        ({**EVENT, "customer_id": None}, "'customer_id' (features.entity_column) expects text or an integer"),
        ({**EVENT, "customer_id": [1]}, "'customer_id' (features.entity_column)"),
        ({k: v for k, v in EVENT.items() if k != "ts"}, "'ts' (source.timestamp_column)"),
        ({**EVENT, "ts": "yesterday"}, "'ts' (source.timestamp_column) expects an ISO 8601 timestamp"),
        ({**EVENT, "ts": 1772446500}, "'ts' (source.timestamp_column) expects an ISO 8601 timestamp"),
        ({**EVENT, "ts": "2026-02-30T10:00:00"}, "'ts' (source.timestamp_column)"),
        ({**EVENT, "transaction_id": None}, "'transaction_id' (source.id_column)"),
        ({**EVENT, "transaction_id": ""}, "'transaction_id' (source.id_column)"),
        ({**EVENT, "amount": "12"}, "'amount' (features.numeric) expects a finite number or null"),
    ],
)
def test_bad_raw_events_get_422_naming_the_field(event, named):
    err = refused(EVENT, event)
    assert err.status == 422 and named in err.message, err.message
    if "expects" in named:
        assert "row 1" in err.message


def test_derived_features_and_the_label_are_not_sent_in_a_raw_event():
    err = refused({**EVENT, "entity_txn_count_1h": 3})
    assert "entity_txn_count_1h" in err.message and "X-Input: model" in err.message
    err = refused({**EVENT, "is_fraud": 0})
    assert "is_fraud" in err.message and "label" in err.message


def test_the_mode_is_chosen_explicitly():
    assert input_mode(None, "model") == "model" and input_mode(None, "raw") == "raw"
    assert input_mode("RAW", "model") == "raw"
    with pytest.raises(RequestError, match="X-Input must be one of"):
        input_mode("features", "model")


def test_the_fast_timestamp_parse_agrees_with_pandas():
    import pandas as pd

    from ml_ops.serving.rawinput import _fast_ns

    for text in [
        "2026-03-02T10:15:00Z",
        "2026-03-02 10:15",
        "2026-03-02T10:15:00.123456",
        "2026-03-02T12:15:00.5+02:00",
        "1969-12-31T23:59:59.999999-05:30",
    ]:
        expected = pd.to_datetime(pd.Series([text]), utc=True, format="ISO8601").dt.tz_localize(None)
        assert _fast_ns(text) == expected.to_numpy("datetime64[ns]").view(np.int64)[0], text
    assert _fast_ns("2026-03-02T10:15:00.123456789") is None  # nanoseconds: pandas parses it
    assert parse({**EVENT, "ts": "2026-03-02T10:15:00.123456789Z"}).ts[0] % 1000 == 789
