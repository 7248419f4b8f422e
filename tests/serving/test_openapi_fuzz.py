"""Schemathesis against the running gateway's own ``GET /openapi.json`` (issue "Gateway hardening").

Every documented operation gets a bounded number of generated requests, positive (fits the schema) and
negative (violates it), from a derandomized Hypothesis run: the same requests on every run. Each goes to the
real gateway with its admin token; no answer may be a 5xx (except the 503 of ``tumors``, which has no model in
this suite) and every answer must match what the document says: a documented status, its content type, its
headers and its JSON schema, and data that violates the schema must be refused.

Steers keep the run from stopping at 404 and 422: the pipeline (path parameter, or none on ``/invocations``)
is sometimes a served one, an invocation body's rows are sometimes laid over a real row of the model's inputs,
and feedback bodies sometimes name request ids the gateway served. Generated values still win where they collide.
About 800 requests; every problem is collected and reported at the end (with a curl line to reproduce it).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup

from tests.serving.conftest import admin

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 100  # per operation and generation mode
SERVED = ("fraud", "tumors")  # tumors has no model: its invocations answer 503
NO_MODEL = "has no champion model yet"
CHECKS = [
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429]  # negative_data_rejection's default


@pytest.fixture(scope="module")
def schema(stack, world):
    config = schemathesis.Config.from_dict(
        {
            "generation": {"allow-x00": False},
            # too many rows or labels is refused with 413 (documented), a status this check does not expect by default
            "checks": {"negative_data_rejection": {"expected-statuses": [*REFUSALS, 413]}},
        }
    )
    return schemathesis.openapi.from_url(f"{stack.gateway_url}/openapi.json", config=config, timeout=30)


@pytest.fixture(scope="module")
def served_ids(stack, world) -> list[str]:
    """Request ids the gateway answered (fixed ids, so feedback cases naming them are the same every run)."""
    ids = []
    for i, row in enumerate(world.rows(5, offset=300)):
        rid = f"openapi-fuzz-served-{i}"
        resp = requests.post(
            f"{stack.gateway_url}/pipelines/fraud/invocations",
            json={"dataframe_records": [row]},
            headers={"X-Request-ID": rid},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        ids.append(rid)
    return ids


def over_real_row(body, row: dict):
    """An invocation body whose rows are laid over ``row`` (generated columns win)."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key in ("dataframe_records", "instances", "inputs"):
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [{**row, **r} if isinstance(r, dict) else r for r in value or [{}]]
        elif isinstance(value, dict) and key != "dataframe_records":  # columnar: one list per column
            n = max((len(v) for v in value.values() if isinstance(v, list)), default=1) or 1
            out[key] = {**{c: [x] * n for c, x in row.items()}, **value}
    split = out.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
        columns = [c for c in row if c not in split["columns"]]
        data = [[row[c] for c in columns] + d if isinstance(d, list) else d for d in split["data"]]
        out["dataframe_split"] = {**split, "columns": columns + split["columns"], "data": data}
    return out


def naming_served_ids(body, ids: list[str], draw):
    """A feedback body whose request ids are ids the gateway served."""
    if isinstance(body, dict) and isinstance(body.get("request_id"), str):
        return {**body, "request_id": draw(st.sampled_from(ids))}
    if isinstance(body, dict) and isinstance(body.get("labels"), list):
        labels = [
            {**item, "request_id": draw(st.sampled_from(ids))} if isinstance(item, dict) else item
            for item in body["labels"]
        ]
        return {**body, "labels": labels}
    return body


def fuzz(op, mode: GenerationMode, send, rows: list[dict], served_ids: list[str]) -> None:
    """``MAX_EXAMPLES`` derandomized cases of ``op`` in ``mode``, each passed to ``send``."""

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # problems are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=op.as_strategy(mode), data=st.data())
    def run(case, data):
        steer = st.sampled_from([True, False])  # True first: Hypothesis starts from the first choice
        if "pipeline" in (case.path_parameters or {}):
            pipeline = data.draw(st.sampled_from([*SERVED, None]))
            if pipeline:
                case.path_parameters = {**case.path_parameters, "pipeline": pipeline}
        if op.path == "/invocations" and data.draw(steer):  # no ?pipeline= and no X-Pipeline: the default, fraud
            case.query = {k: v for k, v in (case.query or {}).items() if k != "pipeline"}
            case.headers = {k: v for k, v in (case.headers or {}).items() if k != "X-Pipeline"}
        if op.path.endswith("/invocations") and data.draw(steer):
            case.body = over_real_row(case.body, data.draw(st.sampled_from(rows)))
        if op.path.endswith("/feedback") and data.draw(steer):
            case.body = naming_served_ids(case.body, served_ids, data.draw)
        send(case, mode)

    run()


def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(schema, stack, world, served_ids):
    rows = world.rows(30, offset=200, extra=("transaction_id",))
    session = requests.Session()
    session.headers.update(admin())
    outcomes: dict[str, Counter] = {}
    problems: list[str] = []

    def send(case, mode: GenerationMode) -> None:
        response = case.call(base_url=stack.gateway_url, session=session, timeout=30)
        outcomes.setdefault(case.operation.label, Counter())[response.status_code] += 1
        where = f"{case.operation.label} ({mode.value}) -> {response.status_code}"
        no_model = response.status_code == 503 and NO_MODEL in response.text
        if response.status_code >= 500 and not no_model:
            problems.append(f"{where}: {response.text[:300]}\n  {case.as_curl_command(headers=admin())[:2000]}")
            return
        excluded = []
        if no_model:  # a pipeline without a model answers 503 before it reads the body
            excluded.append(schemathesis.checks.negative_data_rejection)
        if case.operation.label == "POST /admin/flush" and response.status_code == 200:
            report = response.json()  # every row accepted so far is writable
            if report["failed"] or report["dead_letter"]:
                problems.append(f"{where}: {response.text[:2000]}")
        try:
            case.validate_response(response, checks=CHECKS, excluded_checks=excluded, headers=admin())
        except FailureGroup as exc:
            problems.append(f"{where}: {str(exc)[:2000]}")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /invocations",
        "POST /pipelines/{pipeline}/invocations",
        "POST /endpoints/{pipeline}/invocations",
        "POST /pipelines/{pipeline}/feedback",
        "POST /admin/flush",
    }
    started = time.monotonic()
    for op in operations:
        fuzz(op, GenerationMode.POSITIVE, send, rows, served_ids)
        if op.body or any(True for _ in op.iter_parameters()):  # else there is nothing to violate
            fuzz(op, GenerationMode.NEGATIVE, send, rows, served_ids)
    elapsed = time.monotonic() - started
    summary = {label: dict(sorted(c.items())) for label, c in outcomes.items()}
    print(f"schemathesis: {sum(sum(c.values()) for c in outcomes.values())} requests in {elapsed:.1f}s", summary)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n\n".join(problems[:10])
    # the steers reached the models and the feedback index, not only the parsers
    for label in ("POST /pipelines/{pipeline}/invocations", "POST /endpoints/{pipeline}/invocations"):
        assert outcomes[label][200] >= 3 and outcomes[label][422] >= 3, (label, summary)
    assert outcomes["POST /pipelines/{pipeline}/feedback"][200] >= 1, summary
    # and every row the gateway accepted is writable
    report = session.post(f"{stack.gateway_url}/admin/flush", timeout=120).json()
    assert report["failed"] == {} and report["dead_letter"] == {}, report
