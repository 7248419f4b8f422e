"""What monitoring reads for a day: the current data, and the labelled window quality is judged on.

Current data is what the champion served that day: the gateway's prediction logs
(``serving_logs/ds=<day>/hour=<hh>/part-*.parquet``: inputs and served score, failed predictions and
canary-routed rows left out). A day without logs (no traffic, or no gateway) falls back to the day's
feature partition scored by the champion; the result says which (``source``).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, NoReturn

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DayInterval
from ml_ops.pipeline.steps import SkipStep, uri
from ml_ops.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd

    from ml_ops.monitoring.champion import Champion

SCORE_COLUMN = "score"
SERVING_LOGS, FEATURES = layout.SERVING_LOGS, layout.FEATURES  # the current data's two sources
QUALITY_WINDOW_DAYS = 7  # labelled days the error-stream detector sees (before the label delay)
# quality is reported on the newest labelled days, going back until there are this many rows and this
# many of each class (fraud has a few dozen positives a day: one day's AUC would be noise)
MIN_LABELLED_ROWS = 100
MIN_PER_CLASS = 20


def no_data(cfg: Pipeline, ds: str, reason: str) -> NoReturn:
    """The day cannot be monitored: a skipped task, or a failed one with ``monitoring.on_missing_data: fail``."""
    message = f"{cfg.name} ds={ds}: no usable current data: {reason}"
    if cfg.monitoring.on_missing_data == "skip":
        raise SkipStep(message)
    raise ValueError(message + " (monitoring.on_missing_data=fail)")


def _check_columns(cfg: Pipeline, ds: str, what: str, df: pd.DataFrame, required: list[str]) -> None:
    """Required columns present and numeric where the config says numeric, else ``no_data``."""
    import pandas as pd

    missing = [c for c in required if c not in df.columns]
    if missing:
        no_data(cfg, ds, f"{what} lacks column(s) {missing} that the champion needs; it has {sorted(df.columns)}")
    wrong = [
        c
        for c in required
        # an all-null column (an hour of logs without the value) has no type to check
        if c in cfg.features.numeric and not pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()
    ]
    if wrong:
        no_data(
            cfg,
            ds,
            f"{what}: column(s) {wrong} should be numeric but are {[str(df[c].dtype) for c in wrong]}",
        )


def load_current(cfg: Pipeline, store: ObjectStore, ds: str, required: list[str], why: str = "") -> pd.DataFrame:
    """The day's features partition; missing, unreadable, empty or schema-mismatched → ``no_data``
    (``why``: why the features stand in, appended to that message)."""
    part = uri(cfg, layout.FEATURES, ds)
    also = f"; {why}" if why else ""
    if not store.exists(part):
        no_data(cfg, ds, f"{part} does not exist (features not built for this day?){also}")
    try:
        df = store.read_parquet(part)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say which object, not just the parser's error
        no_data(cfg, ds, f"{part} cannot be read as parquet: {type(exc).__name__}: {exc}{also}")
    if len(df) == 0:
        no_data(cfg, ds, f"{part} has 0 rows{also}")
    _check_columns(cfg, ds, part, df, required)
    return df


def serving_log_parts(cfg: Pipeline, store: ObjectStore, ds: str) -> list[str]:
    """The day's ``serving_logs/ds=<day>/hour=<hh>/part-*.parquet`` objects, in hour order."""

    prefix = layout.day_prefix(cfg.prefix(), layout.SERVING_LOGS, ds)
    names = ((u, u.rsplit("/", 1)[-1]) for u in store.list(prefix))
    return [u for u, name in names if name.startswith("part-") and name.endswith(".parquet")]


def _served_by_champion(logs: pd.DataFrame):
    """Rows the champion route answered successfully (failed predictions and canary rows left out)."""
    failed = logs["error"].notna()
    champion = logs["route"].astype("string").eq(layout.CHAMPION).fillna(False).astype(bool)
    return failed, champion


def served_versions(cfg: Pipeline, store: ObjectStore, ds: str) -> Counter:
    """Model version → successful champion-routed predictions of the day, from the gateway's logs.

    Reads three small columns only. A part that cannot be read or lacks them is left out here:
    ``load_serving_logs`` names it when it reads the day."""
    import pandas as pd

    counts: Counter = Counter()
    for part in serving_log_parts(cfg, store, ds):
        try:
            df = store.read_parquet(part, columns=["version", "route", "error"])
        except Exception:  # noqa: BLE001 - reported by load_serving_logs
            continue
        failed, champion = _served_by_champion(df)
        versions = pd.to_numeric(df.loc[~failed & champion, "version"], errors="coerce").dropna()
        counts.update(int(v) for v in versions)
    return counts


def load_serving_logs(
    cfg: Pipeline, store: ObjectStore, ds: str, required: list[str]
) -> tuple[pd.DataFrame | None, dict]:
    """The day's successful champion-routed predictions from the gateway's logs: ``required`` input
    columns plus the log columns monitoring uses (version, route, score, error, ts).

    Returns ``(None, info)`` when the day has no usable traffic (no part files, or none of their rows
    is a successful champion prediction): the features partition stands in. A part file that cannot be
    read or lacks a column the champion needs is not silently skipped: ``no_data`` names the object.
    ``info``: uris, rows read, rows dropped as failed predictions and as canary-routed."""
    import pandas as pd

    parts = serving_log_parts(cfg, store, ds)
    info: dict = {"uris": parts, "rows_logged": 0, "dropped_errors": 0, "dropped_canary": 0}
    if not parts:
        info["note"] = f"no serving logs under {layout.day_prefix(cfg.prefix(), layout.SERVING_LOGS, ds)}"
        return None, info
    frames = []
    for part in parts:
        try:
            # Only what monitoring uses: older or newer gateways may log other columns too.
            df = store.read_parquet(
                part, columns=list(dict.fromkeys(["ts", "version", "route", "score", "error", *required]))
            )
        except Exception as exc:  # noqa: BLE001 - name the object, not just the parser's error
            no_data(cfg, ds, f"{part} cannot be read as parquet: {type(exc).__name__}: {exc}")
        if len(df):
            _check_columns(cfg, ds, part, df, [*required, "version", "route", "score", "error"])
            frames.append(df)
    if not frames:
        info["note"] = f"the {len(parts)} serving-log file(s) of ds={ds} hold 0 rows"
        return None, info
    logs = pd.concat(frames, ignore_index=True)
    for c in required:  # parts typed differently (int/float, an all-null hour) concatenate as object
        if c in cfg.features.numeric:
            logs[c] = pd.to_numeric(logs[c], errors="coerce")
    failed, champion = _served_by_champion(logs)
    info.update(
        rows_logged=len(logs),
        dropped_errors=int(failed.sum()),
        dropped_canary=int((~failed & ~champion).sum()),
    )
    logs = logs[~failed & champion].reset_index(drop=True)
    if len(logs) == 0:
        info["note"] = (
            f"none of the {info['rows_logged']} logged rows of ds={ds} is a successful champion prediction "
            f"({info['dropped_errors']} failed, {info['dropped_canary']} routed to the canary)"
        )
        return None, info
    return logs, info


def current_data(
    cfg: Pipeline, store: ObjectStore, ds: str, champion: Champion, required: list[str]
) -> tuple[pd.DataFrame, dict]:
    """The day's current data: ``required`` columns + ``score`` (the champion's score), whichever the
    source; and a description of the source (``source``: ``serving_logs`` | ``features``).

    Serving logs keep the score the gateway served, except for rows answered by another version than
    ``champion`` (the day's champion: a promotion during the day) or without a score: those are re-scored
    by ``champion``, so the score column compared with the champion's reference is the champion's."""
    import pandas as pd

    required = [c for c in dict.fromkeys(required) if c != SCORE_COLUMN]
    logs, info = load_serving_logs(cfg, store, ds, required)
    if logs is not None:
        score = pd.to_numeric(logs["score"], errors="coerce").astype("float64")
        version = pd.to_numeric(logs["version"], errors="coerce")
        stale = (version != champion.version) | score.isna()
        if stale.any():
            score[stale] = champion.score(logs.loc[stale, required])
        current = logs[required].assign(**{SCORE_COLUMN: score.to_numpy()})
        return current, {"source": SERVING_LOGS, **info, "rows": len(current), "rescored": int(stale.sum())}
    features = load_current(cfg, store, ds, required, why=info.get("note", ""))
    current = features[required].reset_index(drop=True)
    current[SCORE_COLUMN] = champion.score(current)
    part = uri(cfg, layout.FEATURES, ds)
    return current, {"source": FEATURES, "uris": [part], "rows": len(current), "note": info.get("note", "")}


def labelled_window(
    cfg: Pipeline,
    store: ObjectStore,
    interval: DayInterval,
    columns: list[str],
    max_rows_per_day: int,
    exclude: set[str] = frozenset(),
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the last days whose labels were known by the interval's end, in time order, at most
    ``max_rows_per_day`` per day, leaving out the partitions in ``exclude`` (the champion's training data);
    and the newest labelled days quality is reported on (see MIN_PER_CLASS)."""
    import pandas as pd

    from ml_ops.pipeline.steps import existing_partitions, load_labelled

    days = [*interval.previous_days(cfg.target.label_delay_days + QUALITY_WINDOW_DAYS - 1), interval.ds]
    frames = []
    for part in existing_partitions(store, cfg, layout.FEATURES, days):
        if part in exclude:
            continue
        df = load_labelled(store, [part], cfg, interval.end)
        if len(df) > max_rows_per_day:
            df = df.sample(max_rows_per_day, random_state=0)
        if len(df):
            frames.append(df.assign(_day=layout.day_of(part)))
    if not frames:
        return pd.DataFrame(columns=[*columns, "_day"]), []
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(cfg.source.timestamp_column, kind="stable").reset_index(drop=True)
    recent: list[str] = []
    for d in sorted(out["_day"].unique(), reverse=True):
        recent.append(d)
        y = out.loc[out["_day"].isin(recent), cfg.target.column]
        if len(y) >= MIN_LABELLED_ROWS and min(int(y.sum()), int(len(y) - y.sum())) >= MIN_PER_CLASS:
            break
    return out, sorted(recent)
