"""Private prediction logs through the real gateway: a prediction and its feedback for one customer land in S3
with the customer id only as its keyed hash (fraud's privacy.personal_columns), still joinable; routing is by
the raw value, so one customer keeps seeing one model."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.serving.conftest import admin
from tests.serving.test_gateway_api import split

pytestmark = pytest.mark.timeout(300)


def test_a_customers_prediction_and_feedback_land_in_s3_hashed(http, stack, store, world):
    from ml_ops.privacy import keyed_hash

    assert world.cfg.personal_columns == ["customer_id"]
    key = stack.privacy_key.encode()  # generated into the stack's secrets, passed to the gateway's environment
    customer = "privacy-customer-4711"
    rows = world.rows(3, offset=420, extra=("transaction_id",))
    for r in rows:
        r["customer_id"] = customer
    reply = http.post("/invocations", json=split(rows), headers={"X-Request-ID": "privacy-a"})
    assert reply.status_code == 200, reply.text
    labelled = http.post(
        "/pipelines/fraud/feedback",
        json={"labels": [{"request_id": "privacy-a", "row": i, "label": i % 2} for i in range(3)]},
        headers=admin(),
    )
    assert labelled.status_code == 200, labelled.text

    written = http.post("/admin/flush", headers=admin()).json()["written"]
    assert written["predictions"] and written["feedback"], written
    for uri in written["predictions"] + written["feedback"]:  # nowhere in the bytes, not even parquet stats
        assert customer.encode() not in store.get_bytes(uri), uri
    logs = pd.concat([store.read_parquet(u) for u in written["predictions"]], ignore_index=True)
    mine = logs[logs["request_id"] == "privacy-a"].sort_values("row")
    digest = keyed_hash(key, customer)
    assert mine["customer_id"].tolist() == [digest] * 3 and mine["routing_key"].tolist() == [digest] * 3
    assert mine["transaction_id"].tolist() == [r["transaction_id"] for r in rows]  # the event id stays clear
    # feedback carries no customer column; it joins the hashed prediction rows by request id
    feedback = pd.concat([store.read_parquet(u) for u in written["feedback"]], ignore_index=True)
    assert "customer_id" not in feedback.columns
    joined = feedback[feedback["request_id"] == "privacy-a"].merge(mine, on=["request_id", "row"])
    assert joined["label"].tolist() == [0, 1, 0] and set(joined["customer_id"]) == {digest}
    # the same customer hashes the same in a later request (monitoring and erasure find every row)
    again = http.post("/invocations", json=split(rows[:1]), headers={"X-Request-ID": "privacy-b"})
    assert again.json()["routes"] == reply.json()["routes"][:1]
    later = pd.concat(
        [store.read_parquet(u) for u in http.post("/admin/flush", headers=admin()).json()["written"]["predictions"]]
    )
    assert later.loc[later["request_id"] == "privacy-b", "customer_id"].tolist() == [digest]
