"""Labels that arrive on their own: joined to the events they label, day by day, as they trickle in.

With a ``labels:`` section a pipeline's label does not come from the source row. Labels arrive later and
elsewhere: chargebacks in their own table days or weeks after the transaction, outcomes posted back to the
gateway (``feedback``). Every run of the labels task reads the labels that became known by the run's end
(``[first day of the window, run's end)``, bound over the label time) and joins them to the ids of each
event day's features partition of the trailing window (``labels.trailing_days`` days up to the run's day):

* ``labels/ds=<event day>/data.parquet``: ``id, label, labelled_at, source`` (``table`` | ``feedback``), one
  row per labelled id of the day, rewritten whole at every run (same inputs, same bytes);
* ``labels/ds=<event day>/labels.json``: rows, labelled rows, positives and corrections so far;
* ``labels/unmatched.jsonl``: per run, the labels whose id is in no features partition of the window
  (older than the window, a day not built or quarantined, or an unknown id): counted, never dropped silently.

A label that contradicts an earlier one for the same id replaces it (the latest ``labelled_at`` wins; ties go
to the later ``source`` name, then the higher label, so the choice is deterministic) and is counted as a
correction. ``labelled_at`` of the kept row is when its current label first became known: a chargeback
confirmed again later keeps the time of the chargeback. Feedback rows name a request (``request_id, row``);
the serving logs of the window tell which event (the pipeline's id column, sent with the request) it was.

Training and monitoring read the labels through ``load_labelled`` (``attach_labels`` here), keeping the
labels known by the window's ``labels_known_at``, of the days that have matured by then: a day is labelled
``target.label_delay_days`` after it ends, as training's window counts it. A younger day's known labels are
the early ones only (chargebacks come within days, a legitimate transaction is confirmed once it is old
enough), a sample of mostly one class: on it a model's ROC-AUC and error say nothing, and the monitoring's
error-stream detector would alarm on the positives arriving first. A re-run of an old day rewrites the
window's partitions as of that day's end (no label from its future); the next day's run brings them forward
again.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.config import Pipeline, include_dir
from ml_ops.interval import DayInterval
from ml_ops.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Columns of labels/ds=<day>/data.parquet, and the values of its ``source`` column.
ID, LABEL, LABELLED_AT, SOURCE = "id", "label", "labelled_at", "source"
COLUMNS = (ID, LABEL, LABELLED_AT, SOURCE)
TABLE, FEEDBACK = "table", "feedback"
MAX_EXAMPLES = 10  # unmatched ids named in the step's result and the log


def query_columns(cfg: Pipeline) -> tuple[str, str, str]:
    """(id, label, labelled_at) column names of the labels query, defaults resolved."""
    lc = cfg.labels
    return (lc.id_column or cfg.source.id_column, lc.label_column or cfg.target.column, lc.labelled_at_column)


def window_days(cfg: Pipeline, interval: DayInterval) -> list[str]:
    """The event days a run re-joins: ``labels.trailing_days`` days ending with the run's day, oldest first."""
    return [*interval.previous_days(cfg.labels.trailing_days - 1), interval.ds]


def _utc(value: datetime) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize(timezone.utc) if ts.tzinfo is None else ts.tz_convert(timezone.utc)


def _frame(ids, labels, labelled_at, source: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            ID: pd.Series(ids, dtype=object).reset_index(drop=True),
            LABEL: pd.to_numeric(pd.Series(labels).reset_index(drop=True), errors="coerce"),
            # naive times from a database are UTC, as the source's are
            LABELLED_AT: pd.to_datetime(pd.Series(labelled_at).reset_index(drop=True), utc=True, errors="coerce"),
            SOURCE: source,
        }
    )


def read_table_labels(cfg: Pipeline, engine, start: datetime, end: datetime) -> pd.DataFrame:
    """The labels query's rows for label times in [start, end) as (id, label, labelled_at, source)."""
    from ml_ops.pipeline.extract import SourceQueryError, read_interval

    id_col, label_col, at_col = query_columns(cfg)
    sql = (include_dir() / cfg.labels.sql).read_text()
    try:
        df = read_interval(engine, sql, start, end, parse_dates=[at_col])
    except SourceQueryError as exc:
        raise SourceQueryError(f"{exc} (labels SQL file {cfg.labels.sql})") from exc
    missing = [c for c in (id_col, label_col, at_col) if c not in df.columns]
    if missing:
        raise ValueError(
            f"{cfg.name}: the labels query ({cfg.labels.sql}) returns no column(s) {missing}; it returns "
            f"{list(df.columns)} (labels.id_column / label_column / labelled_at_column name them)"
        )
    return _frame(df[id_col], df[label_col], df[at_col], TABLE)


def _hourly_parts(store: ObjectStore, cfg: Pipeline, stage: str, days: list[str]) -> list[str]:
    found: list[str] = []
    for d in days:
        found += [u for u in store.list(layout.day_prefix(cfg.prefix(), stage, d)) if u.endswith(".parquet")]
    return found


def read_feedback_labels(cfg: Pipeline, store: ObjectStore, days: list[str], end: datetime) -> tuple[pd.DataFrame, int]:
    """Feedback posted on ``days`` before ``end``, joined to the serving logs of ``days`` on (request_id, row)
    to find the event's id. Returns the labels and how many feedback rows named no logged request with an
    id (a request before the window, one sent without the id column, or a request id reused for two events)."""
    import pandas as pd

    parts = _hourly_parts(store, cfg, layout.FEEDBACK, days)
    if not parts:
        return _frame([], [], [], FEEDBACK), 0
    fb = pd.concat(store.read_parquets(parts, columns=["request_id", "row", "label", "ts"]), ignore_index=True)
    fb = fb[pd.to_datetime(fb["ts"], utc=True) < _utc(end)].reset_index(drop=True)
    id_col = cfg.source.id_column
    logs = store.read_parquets(
        _hourly_parts(store, cfg, layout.SERVING_LOGS, days), columns=["request_id", "row", id_col]
    )
    logs = [df for df in logs if id_col in df.columns and len(df)]
    if logs:
        served = pd.concat(logs, ignore_index=True).dropna(subset=[id_col])
        served = pd.DataFrame(
            {
                "request_id": served["request_id"].astype(str),
                "row": pd.to_numeric(served["row"], errors="coerce").fillna(0).astype("int64"),
                ID: served[id_col].astype(str),
            }
        ).drop_duplicates()
        ambiguous = served.duplicated(["request_id", "row"], keep=False)  # one request id, two events
        served = served[~ambiguous]
    else:
        served = pd.DataFrame(
            {"request_id": pd.Series(dtype=str), "row": pd.Series(dtype="int64"), ID: pd.Series(dtype=str)}
        )
    keys = pd.DataFrame(
        {
            "request_id": fb["request_id"].astype(str).to_numpy(),
            "row": pd.to_numeric(fb["row"], errors="coerce").fillna(0).astype("int64").to_numpy(),
        }
    )
    ids = keys.merge(served, on=["request_id", "row"], how="left")[ID]  # left merge keeps fb's order
    found = ids.notna()
    labels = _frame(ids[found], fb.loc[found, "label"], fb.loc[found, "ts"], FEEDBACK)
    return labels, int((~found).sum())


def _valid(labels: pd.DataFrame, end: datetime) -> tuple[pd.DataFrame, int]:
    """Rows with an id, a 0/1 label and a label time before ``end``; and how many were invalid. A label time
    at or after ``end`` is not known yet (a query that ignored :end): left for a later run, not counted."""
    ok = labels[ID].notna() & labels[LABEL].isin([0, 1]) & labels[LABELLED_AT].notna()
    invalid = int((~ok).sum())
    labels = labels[ok]
    labels = labels[labels[LABELLED_AT] < _utc(end)].copy()
    labels[ID] = labels[ID].astype(str)
    labels[LABEL] = labels[LABEL].astype("int64")
    return labels, invalid


def resolve(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One row per id: its latest label, with the time that label first became known; and per id the number
    of corrections (labels contradicting the one before them, in label-time order)."""
    df = labels.sort_values([ID, LABELLED_AT, SOURCE, LABEL], kind="mergesort").reset_index(drop=True)
    new_id = df[ID].ne(df[ID].shift())
    changed = df[LABEL].ne(df[LABEL].shift()) & ~new_id
    run = (new_id | changed).cumsum()
    last = run.eq(run.groupby(df[ID]).transform("max"))
    latest = df[last].drop_duplicates(ID, keep="first").set_index(ID)
    return latest, changed.groupby(df[ID]).sum().astype("int64")


def _partition(ids: pd.Series, latest: pd.DataFrame) -> pd.DataFrame:
    """The day's labelled ids (``ids``: the features' id column), sorted by id, in the partition's schema."""
    import pandas as pd

    keys = ids.astype(str)
    hit = keys.isin(latest.index).to_numpy()
    order = keys[hit].argsort(kind="mergesort").to_numpy()
    chosen, chosen_keys = ids[hit].iloc[order], keys[hit].iloc[order]
    rows = latest.loc[chosen_keys]
    return pd.DataFrame(
        {
            ID: chosen.reset_index(drop=True),
            LABEL: rows[LABEL].astype("int64").to_numpy(),
            LABELLED_AT: pd.to_datetime(rows[LABELLED_AT], utc=True).reset_index(drop=True),
            SOURCE: pd.Series(rows[SOURCE].to_numpy(), dtype=object),
        }
    )


def labels_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval, engine) -> dict:
    """Join the labels known by the run's end to the features of the trailing window; write each day's
    partition and summary. Returns a small summary (XCom): per day rows/labelled/corrected, and the
    labels that matched no features partition (``unmatched``)."""
    import pandas as pd

    from ml_ops.pipeline.steps import existing_partitions

    if cfg.labels is None:
        raise ValueError(f"{cfg.name}: the pipeline has no labels: section")
    days = window_days(cfg, interval)
    start = DayInterval.for_day(date.fromisoformat(days[0])).start
    frames, read = [], {}
    if cfg.labels.sql:
        frames.append(read_table_labels(cfg, engine, start, interval.end))
        read[TABLE] = len(frames[-1])
    unresolved = 0
    if cfg.labels.feedback:
        fb, unresolved = read_feedback_labels(cfg, store, days, interval.end)
        frames.append(fb)
        read[FEEDBACK] = len(fb) + unresolved
    labels, invalid = _valid(pd.concat(frames, ignore_index=True), interval.end)
    latest, corrections = resolve(labels)

    matched: set[str] = set()
    summary: dict[str, dict] = {}
    for part in existing_partitions(store, cfg, layout.FEATURES, days):
        ds = layout.day_of(part)
        ids = store.read_parquet(part, columns=[cfg.source.id_column])[cfg.source.id_column]
        out = _partition(ids, latest)
        keys = set(out[ID].astype(str))
        matched |= keys
        record = {
            "ds": ds,
            "rows": len(ids),
            "labelled": len(out),
            "positives": int(out[LABEL].sum()),
            "corrected": int(corrections.reindex(sorted(keys)).sum()) if keys else 0,
            "by_source": {s: int(n) for s, n in sorted(out[SOURCE].value_counts().items())},
            "labels_known_at": interval.end.isoformat(),
            "written_by": interval.ds,
        }
        store.write_parquet(out, layout.partition(cfg.prefix(), layout.LABELS, ds))
        store.write_json(record, layout.partition(cfg.prefix(), layout.LABELS, ds, layout.LABELS_SUMMARY))
        summary[ds] = {k: record[k] for k in ("rows", "labelled", "corrected")}

    unmatched = latest[~latest.index.isin(matched)]
    arrived_today = labels[labels[ID].isin(unmatched.index) & (labels[LABELLED_AT] >= _utc(interval.start))]
    result = {
        "window": f"{days[0]}..{days[-1]}",
        "labels_known_at": interval.end.isoformat(),
        "labels_read": read,
        "invalid": invalid,
        "days": summary,
        "labelled": sum(s["labelled"] for s in summary.values()),
        "corrected": sum(s["corrected"] for s in summary.values()),
        "unmatched": len(unmatched),
        "unmatched_new": int(arrived_today[ID].nunique()),
        "unmatched_examples": sorted(unmatched.index)[:MAX_EXAMPLES],
        "feedback_unresolved": unresolved,
    }
    if result["unmatched"] or unresolved or invalid:
        log.warning(
            "%s ds=%s: %d label(s) match no features partition of %s (%d arrived today, e.g. %s); %d feedback row(s) "
            "name no logged request; %d invalid label row(s)",
            cfg.name,
            interval.ds,
            result["unmatched"],
            result["window"],
            result["unmatched_new"],
            result["unmatched_examples"][:3],
            unresolved,
            invalid,
        )
        counts = (result["unmatched"], result["unmatched_new"], unresolved, invalid)
        record = {
            "ds": interval.ds,
            **{k: result[k] for k in ("window", "unmatched", "unmatched_new", "unmatched_examples")},
            "feedback_unresolved": unresolved,
            "invalid": invalid,
            "key": f"{interval.ds}:" + ":".join(map(str, counts)),
        }
        store.append_jsonl(layout.unmatched_labels_log(cfg.prefix()), record, key="key")
    return result


def attach_labels(
    store: ObjectStore, cfg: Pipeline, features: pd.DataFrame, ds: str, labels_known_at: datetime
) -> pd.DataFrame:
    """The rows of day ``ds``'s features whose label was known by ``labels_known_at``, with the label from
    ``labels/ds=<ds>/`` as the target column (the source row's label and label time, if any, are dropped).
    None before the day has matured (``target.label_delay_days`` after its end; see the module's doc)."""
    import pandas as pd

    target, id_col = cfg.target.column, cfg.source.id_column
    df = features.drop(columns=[c for c in (target, cfg.target.label_available_column) if c and c in features])
    none = df.iloc[0:0].assign(**{target: pd.Series(dtype="int64")})
    matured_at = DayInterval.for_day(date.fromisoformat(ds)).end + timedelta(days=cfg.target.label_delay_days)
    if _utc(matured_at) > _utc(labels_known_at):
        return none
    part = layout.partition(cfg.prefix(), layout.LABELS, ds)
    if not store.exists(part):
        log.info("%s ds=%s: no labels partition %s yet: no labelled rows", cfg.name, ds, part)
        return none
    labels = store.read_parquet(part)
    labels = labels[pd.to_datetime(labels[LABELLED_AT], utc=True) <= _utc(labels_known_at)]
    by_id = pd.Series(labels[LABEL].to_numpy(), index=labels[ID].astype(str).to_numpy())
    y = df[id_col].astype(str).map(by_id)
    keep = y.notna().to_numpy()
    return df[keep].assign(**{target: y[keep].astype("int64").to_numpy()}).reset_index(drop=True)
