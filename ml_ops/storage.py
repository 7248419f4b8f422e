"""Object store for pipeline data: partition URIs, atomic writes, parquet and JSON I/O.

Every object is written whole in one PUT (multipart uploads too become visible only when
completed), so a reader sees the old object or the new one, never a partial file. Writes
overwrite their own partition, which makes re-running a task for the same interval idempotent.

Server-side encryption is requested on every write (``put_bytes`` and ``upload_file``, which every other
writer goes through), as ``MLOPS_S3_SSE`` says (read when the store is built):

* ``auto`` (default): ``ServerSideEncryption=AES256`` (SSE-S3); an endpoint that refuses SSE (MinIO without a
  KMS answers ``NotImplemented``) gets the write without it, once logged as an error per store;
* ``AES256`` / ``aws:kms`` (with ``MLOPS_S3_SSE_KMS_KEY_ID``, else the bucket's default KMS key): required, a
  refusal fails the write;
* ``off``: nothing requested.

The embedded stack's rclone endpoint accepts the header and ignores it (objects are stored in plain files, the
response names no encryption): encryption at rest there is the disk's.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pandas as pd


log = logging.getLogger(__name__)

SSE_MODES = ("auto", "AES256", "aws:kms", "off")
# Error codes an endpoint answers when it cannot do server-side encryption (MinIO without a KMS: NotImplemented)
_SSE_REFUSED = ("NotImplemented", "InvalidEncryptionAlgorithmError", "KMS.NotConfigured", "InvalidArgument")


def sse_from_env(environ: dict | None = None) -> tuple[str, dict[str, str]]:
    """``(mode, extra PUT arguments)`` from ``MLOPS_S3_SSE`` (and ``MLOPS_S3_SSE_KMS_KEY_ID``)."""
    env = os.environ if environ is None else environ
    raw = (env.get("MLOPS_S3_SSE") or "auto").strip()
    mode = {"aes256": "AES256", "aws:kms": "aws:kms", "kms": "aws:kms", "auto": "auto", "off": "off", "none": "off"}
    mode = mode.get(raw.lower(), mode.get(raw, raw))
    if mode not in SSE_MODES:
        raise ValueError(f"MLOPS_S3_SSE={raw!r}: expected one of {', '.join(SSE_MODES)}")
    if mode == "off":
        return mode, {}
    if mode == "aws:kms":
        key = env.get("MLOPS_S3_SSE_KMS_KEY_ID")
        return mode, {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": key} if key else {})}
    return mode, {"ServerSideEncryption": "AES256"}


def _sse_refused(exc: BaseException | None) -> bool:
    """The endpoint refused the write for its SSE request. boto3's ``upload_file`` wraps the ClientError in an
    ``S3UploadFailedError`` (no response of its own): the chain is walked."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None) or {}
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        code, message = str(error.get("Code", "")), str(error.get("Message", "")).lower()
        if code in _SSE_REFUSED and (code == "NotImplemented" or "encrypt" in message or "kms" in message):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def parse_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass
class ObjectStore:
    client: Any  # a boto3 S3 client
    sse: str | None = None  # MLOPS_S3_SSE mode (module docstring); None: read from the environment
    sse_args: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        mode, args = sse_from_env()
        if self.sse is not None:
            mode, args = sse_from_env({**os.environ, "MLOPS_S3_SSE": self.sse})
        self.sse, self.sse_args = mode, args

    def _encrypted(self, write, *args, **kwargs):
        """Run one write with the SSE arguments (``write(*args, sse_args, **kwargs)``); in ``auto`` mode an
        endpoint that refuses SSE gets the write without it, and the store stops asking."""
        if not self.sse_args:
            return write(*args, {}, **kwargs)
        try:
            return write(*args, self.sse_args, **kwargs)
        except Exception as exc:
            if self.sse != "auto" or not _sse_refused(exc):
                raise
            log.error(
                "the S3 endpoint refuses server-side encryption (%s): objects are written without it "
                "(MLOPS_S3_SSE=auto; set AES256 to make this an error, off to stop asking)",
                exc,
            )
            self.sse, self.sse_args = "off", {}
            return write(*args, {}, **kwargs)

    # --- bytes -------------------------------------------------------------------------------
    def put_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        bucket, key = parse_uri(uri)
        self._encrypted(
            lambda sse: self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, **sse)
        )
        return uri

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = parse_uri(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def exists(self, uri: str) -> bool:
        bucket, key = parse_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix_uri: str) -> list[str]:
        bucket, prefix = parse_uri(prefix_uri)
        uris: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            uris.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        return sorted(uris)

    def list_etags(self, prefix_uri: str) -> dict[str, str]:
        """URI -> ETag of every object under the prefix (one listing, no per-object request)."""
        bucket, prefix = parse_uri(prefix_uri)
        out: dict[str, str] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.update({f"s3://{bucket}/{obj['Key']}": obj["ETag"].strip('"') for obj in page.get("Contents", [])})
        return out

    def etag(self, uri: str) -> str:
        """The object's ETag: changes whenever its bytes are rewritten differently."""
        bucket, key = parse_uri(uri)
        return self.client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')

    def delete(self, uri: str) -> None:
        bucket, key = parse_uri(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    # --- files -------------------------------------------------------------------------------
    def upload_file(self, path: str, uri: str) -> str:
        bucket, key = parse_uri(uri)
        self._encrypted(lambda sse: self.client.upload_file(path, bucket, key, ExtraArgs=dict(sse) or None))
        return uri

    def download_file(self, uri: str, path: str) -> str:
        bucket, key = parse_uri(uri)
        self.client.download_file(bucket, key, path)
        return path

    # --- parquet -----------------------------------------------------------------------------
    def write_parquet(self, df: pd.DataFrame, uri: str) -> str:
        """Write locally first, then upload the finished file: no partial object is ever visible."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="mlops-") as tmp:
            path = os.path.join(tmp, "data.parquet")
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, compression="snappy")
            return self.upload_file(path, uri)

    def read_parquet(self, uri: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One object, read in memory (our partitions are a few MB; a temporary file and boto3's transfer
        threads cost more than the read for the gateway's many small log parts)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = pa.BufferReader(self.get_bytes(uri))
        if columns is not None:  # asking for what an older partition lacks is not an error
            present = set(pq.read_schema(data).names)
            columns = [c for c in columns if c in present]
        return pq.read_table(data, columns=columns).to_pandas()

    def read_parquets(self, uris: list[str], columns: list[str] | None = None, workers: int = 8) -> list[pd.DataFrame]:
        """``read_parquet`` of each uri, in order, several at a time: the judge and the nightly step read a day
        of the gateway's log parts (hundreds of small objects), where the round trips dominate."""
        if len(uris) <= 1:
            return [self.read_parquet(u, columns) for u in uris]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(uris))) as pool:
            return list(pool.map(lambda u: self.read_parquet(u, columns), uris))

    def parquet_rows(self, uri: str) -> int:
        """Row count from the parquet footer (the object is downloaded, its data not decoded)."""
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="mlops-") as tmp:
            return pq.read_metadata(self.download_file(uri, os.path.join(tmp, "data.parquet"))).num_rows

    # --- json / text -------------------------------------------------------------------------
    def write_json(self, obj: Any, uri: str) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        return self.put_bytes(uri, data, "application/json")

    def read_json(self, uri: str) -> Any:
        return json.loads(self.get_bytes(uri))

    def write_text(self, text: str, uri: str, content_type: str = "text/html; charset=utf-8") -> str:
        return self.put_bytes(uri, text.encode(), content_type)

    def append_jsonl(self, uri: str, record: dict, *, key: str) -> bool:
        """Append ``record`` to a JSON-lines log unless a record with the same ``key`` value is there.

        S3 has no append: the log is rewritten whole (atomically). Callers serialise writers
        (max_active_runs=1 per pipeline); the key makes a retried task not log twice.
        Returns False when the record was already present.
        """
        lines = self.get_bytes(uri).decode().splitlines() if self.exists(uri) else []
        if any(json.loads(line).get(key) == record[key] for line in lines if line.strip()):
            return False
        lines.append(json.dumps(record, sort_keys=True, default=str))
        self.put_bytes(uri, ("\n".join(lines) + "\n").encode(), "application/x-ndjson")
        return True

    def read_jsonl(self, uri: str) -> list[dict]:
        if not self.exists(uri):
            return []
        return [json.loads(line) for line in io.StringIO(self.get_bytes(uri).decode()) if line.strip()]


def store_from_airflow(aws_conn_id: str = "aws_default") -> ObjectStore:
    """Store built from an Airflow AWS connection (endpoint_url in its extra for MinIO/rclone)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return ObjectStore(S3Hook(aws_conn_id=aws_conn_id).get_conn())


def store_from_env() -> ObjectStore:
    """Store for scripts and tests outside Airflow: MLOPS_S3_ENDPOINT + AWS_* credentials."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("MLOPS_S3_ENDPOINT"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    return ObjectStore(client)
