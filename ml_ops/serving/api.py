"""Request and response models of the gateway, for its OpenAPI document (``GET /openapi.json``).

Documentation only: bodies are parsed and validated by ``ml_ops.serving.schema.parse_json`` and the
checks in ``ml_ops.serving.service`` (strict JSON, depth, surrogates, int64, duplicate keys; then the
model's signature), which these models describe but do not replace.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ml_ops.serving.service import MAX_LABELS


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error response: what went wrong, naming the field, column or header."""

    error: str = Field(examples=["column 'amount' expects a finite double; row 0 has a non-finite number (inf)"])
    request_id: str | None = Field(None, description="the request's id, on prediction routes")


class DataframeSplit(_Body):
    columns: list[str]
    data: list[list[Any]] = Field(description="one list of values per row, in the order of columns")
    index: list[Any] | None = Field(None, description="ignored")


class SplitRequest(_Body):
    dataframe_split: DataframeSplit
    params: dict[str, Any] | None = Field(None, description="accepted and ignored")


class RecordsRequest(_Body):
    dataframe_records: list[dict[str, Any]] = Field(description="one object per row")
    params: dict[str, Any] | None = None


class InstancesRequest(_Body):
    instances: list[dict[str, Any]] | dict[str, list[Any]] = Field(
        description="one object per row, or one list of values per column"
    )
    params: dict[str, Any] | None = None


class InputsRequest(_Body):
    inputs: list[dict[str, Any]] | dict[str, list[Any]] = Field(description="as instances")
    params: dict[str, Any] | None = None


InvocationRequest = SplitRequest | RecordsRequest | InstancesRequest | InputsRequest


class InvocationResponse(BaseModel):
    predictions: list[float | None] = Field(description="P(positive) per row")
    versions: list[int] = Field(description="model version that answered each row")
    routes: list[Literal["champion", "canary"]] = Field(description="route of each row")
    request_id: str


class Label(_Body):
    request_id: str = Field(min_length=1, max_length=128, description="a request id this gateway answered")
    label: Literal[0, 1]
    row: int = Field(0, ge=0, description="row of that request (0 for single-row requests)")


class LabelBatch(_Body):
    labels: list[Label] = Field(min_length=1, max_length=MAX_LABELS)


FeedbackRequest = Label | LabelBatch


class FeedbackResponse(BaseModel):
    accepted: int
    pipeline: str


class DeadLetter(BaseModel):
    uri: str
    rows: int
    reason: str


class FailedWrite(BaseModel):
    uri: str
    rows: int
    error: str


class FlushResponse(BaseModel):
    written: dict[str, list[str]] = Field(description="parquet parts written, per log (predictions, feedback)")
    dead_letter: dict[str, list[DeadLetter]] = Field(
        {}, description="rows parquet cannot hold, written as JSON lines with the reason instead"
    )
    failed: dict[str, list[FailedWrite]] = Field(
        {}, description="writes that failed (rows kept for the next flush); non-empty means status 503"
    )
    error: str | None = None


def _errors(*statuses: int) -> dict:
    why = {
        400: "malformed body or header: not UTF-8 JSON, nested too deep, duplicate key, wrong shape",
        401: "a bearer token is needed",
        403: "wrong bearer token, or the gateway has none",
        404: "unknown pipeline",
        405: "method not allowed",
        408: "the body did not arrive within MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS",
        413: "body or batch too large",
        415: "Content-Type is not application/json (UTF-8)",
        422: "a value the gateway cannot use: lone surrogate, integer beyond int64, non-finite number, "
        "wrong type, missing or unexpected column; in a raw event also a missing or null event id or entity id, "
        "or a timestamp that is not ISO 8601 (naming the column); on feedback also an unknown request id",
        500: "the model failed (or a gateway bug)",
        503: "the pipeline has no champion loaded yet, or (raw events) the online feature store is unavailable",
    }
    return {s: {"model": ErrorBody, "description": why[s]} for s in statuses}


INVOCATION_ERRORS = _errors(400, 401, 403, 404, 405, 408, 413, 415, 422, 500, 503)
FEEDBACK_ERRORS = _errors(400, 401, 403, 404, 408, 413, 415, 422, 500)
ADMIN_ERRORS = _errors(401, 403)


def request_body(annotation, description: str) -> tuple[dict, dict]:
    """(``openapi_extra`` declaring a JSON request body of ``annotation``, the component schemas it refers to)."""
    schema = TypeAdapter(annotation).json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    extra = {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }
    return extra, components


INVOCATION_BODY, _INVOCATION_COMPONENTS = request_body(
    InvocationRequest,
    "MLflow scoring JSON: exactly one of dataframe_split, dataframe_records, instances, inputs. With X-Input: model "
    "(the default unless the pipeline's serving.input is raw) the rows hold the model's inputs; with X-Input: raw "
    "they hold the source's raw event (the pipeline's extract columns without the label), and the gateway computes "
    "the derived features from its online store",
)
FEEDBACK_BODY, _FEEDBACK_COMPONENTS = request_body(
    FeedbackRequest, f"one label, or {{labels: [...]}} (at most {MAX_LABELS:,}); all or nothing"
)
COMPONENTS = {**_INVOCATION_COMPONENTS, **_FEEDBACK_COMPONENTS}
