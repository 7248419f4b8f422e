"""Labels that arrive on their own (``labels:``), through the real steps: SQLite source and labels table, real
S3 endpoint. They reach training (train_step's frames) and monitoring (labelled_window); a corrected label
replaces the earlier one and is counted; a label for an unknown id is counted; re-runs rewrite the same bytes;
without ``labels:`` nothing changes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from types import SimpleNamespace

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from ml_ops import layout
from ml_ops.config import Labels, load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import generate_labels, generate_transactions, load_source
from ml_ops.monitoring.current import labelled_window
from ml_ops.pipeline import labels as labels_mod
from ml_ops.pipeline import steps

D0 = date(2026, 1, 1)
DAYS = [DayInterval.for_day(D0 + timedelta(days=i)) for i in range(8)]
RUN = DAYS[-1]  # the run the labels task and training process: its end is when labels must be known by
NAME = "fraud_labelled"


@pytest.fixture(scope="module")
def store(s3_store):
    return s3_store  # the session's S3 endpoint (tests/unit/conftest.py)


def _cfg(name: str = NAME, **labels):
    """The fraud pipeline with a labels table (include/sql/fraud_labels.sql) and a small training window:
    run day D7 trains on D2..D4, holds out D5 (label delay 2 days)."""
    base = load_pipeline_by_name("fraud")
    return base.model_copy(
        update={
            "name": name,
            "labels": Labels(**{"sql": "sql/fraud_labels.sql", **labels}),
            "target": base.target.model_copy(update={"label_delay_days": 2}),
            "training": base.training.model_copy(update={"window_days": 3, "holdout_days": 1, "min_rows": 100}),
        }
    )


@pytest.fixture(scope="module")
def world(store, tmp_path_factory):
    """Eight days extracted, validated and featurised once; each test brings its own labels table."""
    path = tmp_path_factory.mktemp("source") / "source.db"
    tx = generate_transactions(D0, len(DAYS), rows_per_day=300, seed=3, label_delay_days=1)
    load_source(f"sqlite:///{path}", "transactions", tx)
    cfg = _cfg()
    engine = sa.create_engine(f"sqlite:///{path}")
    for day in DAYS:
        steps.extract_step(cfg, store, day, engine)
        steps.validate_step(cfg, store, day)
        steps.features_step(cfg, store, day)
    engine.dispose()
    return cfg, tx


def _labels_engine(tmp_path, rows: pd.DataFrame):
    """A labels database holding ``rows`` (transaction_id, is_fraud, labelled_at) as transaction_labels."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'labels.db'}")
    rows[["transaction_id", "is_fraud", "labelled_at"]].to_sql("transaction_labels", engine, index=False)
    return engine


def _day(tx: pd.DataFrame, day: DayInterval) -> pd.DataFrame:
    ts = tx["ts"]
    return tx[(ts >= pd.Timestamp(day.ds)) & (ts < pd.Timestamp(day.ds) + pd.Timedelta(days=1))]


def _copy_features(store, src, dst, days) -> None:
    """The shared world's features partitions under another pipeline's prefix (its own labels and logs)."""
    for day in days:
        store.put_bytes(
            steps.uri(dst, layout.FEATURES, day.ds), store.get_bytes(steps.uri(src, layout.FEATURES, day.ds))
        )


def _labels(store, cfg, ds: str) -> pd.DataFrame:
    return store.read_parquet(layout.partition(cfg.prefix(), layout.LABELS, ds))


def _summary(store, cfg, ds: str) -> dict:
    return store.read_json(layout.partition(cfg.prefix(), layout.LABELS, ds, layout.LABELS_SUMMARY))


def _truth(tx: pd.DataFrame) -> pd.DataFrame:
    """Labels of the labels table that disagree with the source row for some rows (so a test can tell which
    one was used), a day after the transaction; D5's last 40 rows are labelled only after the run's end."""
    table = tx[["transaction_id", "ts", "is_fraud"]].copy()
    flip = table.index % 37 == 0
    table.loc[flip, "is_fraud"] = 1 - table.loc[flip, "is_fraud"]
    table["labelled_at"] = table["ts"] + pd.Timedelta(hours=30)
    late = _day(tx, DAYS[5]).index[-40:]
    table.loc[late, "labelled_at"] = pd.Timestamp(RUN.end.replace(tzinfo=None)) + pd.Timedelta(hours=5)
    return table


def test_labels_from_their_own_table_reach_training_and_monitoring(store, world, tmp_path, monkeypatch):
    cfg, tx = world
    table = _truth(tx)
    result = steps.labels_step(cfg, store, RUN, _labels_engine(tmp_path, table))

    known = table[table["labelled_at"] < pd.Timestamp(RUN.end.replace(tzinfo=None))]
    truth = known.set_index("transaction_id")["is_fraud"]
    assert result["labels_read"] == {"table": len(known)}
    assert result["unmatched"] == result["corrected"] == result["invalid"] == 0
    assert result["labelled"] == len(known)
    assert result["days"][DAYS[5].ds] == {
        "rows": len(_day(tx, DAYS[5])),
        "labelled": len(_day(tx, DAYS[5])) - 40,
        "corrected": 0,
    }
    part = _labels(store, cfg, DAYS[3].ds)
    assert list(part.columns) == ["id", "label", "labelled_at", "source"] and part["id"].is_monotonic_increasing
    assert part.set_index("id")["label"].to_dict() == truth[part["id"]].to_dict()
    assert set(part["source"]) == {"table"} and str(part["labelled_at"].dtype) == "datetime64[ns, UTC]"
    assert _summary(store, cfg, DAYS[3].ds) == {
        "ds": DAYS[3].ds,
        "rows": len(_day(tx, DAYS[3])),
        "labelled": len(_day(tx, DAYS[3])),
        "positives": int(truth[part["id"]].sum()),
        "corrected": 0,
        "by_source": {"table": len(part)},
        "labels_known_at": RUN.end.isoformat(),
        "written_by": RUN.ds,
    }

    # Training: train_step's frames carry the labels table's labels, only those known by the run's end.
    seen = {}

    def fake_train(training, holdout, **kwargs):
        seen.update(training=training, holdout=holdout, **kwargs)
        return SimpleNamespace(version="1", run_id="r", model_uri="models:/m/1", metrics={})

    monkeypatch.setattr("ml_ops.pipeline.train.train_and_register", fake_train)
    steps.train_step(cfg, store, RUN, "unused://", run_id="manual__test")
    train_ids = pd.concat([_day(tx, DAYS[i]) for i in (2, 3, 4)])["transaction_id"]
    assert sorted(seen["training"]["transaction_id"]) == sorted(train_ids)
    holdout = seen["holdout"]
    assert len(holdout) == len(_day(tx, DAYS[5])) - 40  # labelled after the run's end: not used
    assert not set(holdout["transaction_id"]) & set(table.loc[_day(tx, DAYS[5]).index[-40:], "transaction_id"])
    for frame in (seen["training"], holdout):
        assert (frame["is_fraud"].to_numpy() == truth[frame["transaction_id"]].to_numpy()).all()
        assert frame["is_fraud"].dtype == "int64" and "label_available_at" not in frame
    flipped = tx.loc[table.index % 37 == 0, "transaction_id"]
    assert holdout["transaction_id"].isin(flipped).any()  # the source row's label would differ: not used

    # Monitoring's realised quality reads the same labels, of the days matured by the run's end (label delay 2:
    # D0..D5); the known labels of D6 and D7 are early ones and left out.
    window, recent = labelled_window(cfg, store, RUN, ["amount"], 10**6)
    matured = known[known["ts"] < pd.Timestamp(DAYS[6].ds)]
    assert len(window) == len(matured) < len(known) and recent
    assert (window["is_fraud"].to_numpy() == truth[window["transaction_id"]].to_numpy()).all()


def test_a_day_is_used_only_once_matured(store, world, tmp_path):
    """Chargebacks come first, confirmations of legitimate transactions after the maturity period: a young day's
    known labels are nearly all positives. Training and monitoring use a day only label_delay_days after its end."""
    cfg, tx = world
    young = _cfg("fraud_labels_young")
    _copy_features(store, cfg, young, DAYS)
    sim = generate_labels(tx, seed=3, maturity_days=1, chargeback_days=(0.2, 1.0), tail_share=0.0)
    steps.labels_step(young, store, RUN, _labels_engine(tmp_path, sim))

    def part(day: DayInterval) -> list[str]:
        return [steps.uri(young, layout.FEATURES, day.ds)]

    today = _labels(store, young, RUN.ds)
    assert len(today) and today["label"].all()  # its early chargebacks are known, none of its confirmations
    assert steps.load_labelled(store, part(RUN), young, RUN.end).empty  # matures at the end of D9
    assert not steps.load_labelled(store, part(RUN), young, RUN.end + timedelta(days=2)).empty
    assert steps.load_labelled(store, part(DAYS[6]), young, RUN.end).empty  # matures at the end of D8
    matured = steps.load_labelled(store, part(DAYS[5]), young, RUN.end)  # matured at the end of D7, the run's day
    truth = _day(tx, DAYS[5]).set_index("transaction_id")["is_fraud"]
    assert len(matured) == len(truth) and (matured["is_fraud"].to_numpy() == truth[matured["transaction_id"]]).all()
    window, recent = labelled_window(young, store, RUN, ["amount"], 10**6)
    assert pd.to_datetime(window["ts"]).max() < pd.Timestamp(DAYS[6].ds) and recent[-1] == DAYS[5].ds


def test_the_join_supplies_a_label_the_features_do_not_have(store, world, tmp_path):
    """A source without a label column (labels only in their own table): features lack it, the join adds it."""
    cfg, tx = world
    bare = _cfg("fraud_bare")
    day = DAYS[4]
    features = store.read_parquet(steps.uri(cfg, layout.FEATURES, day.ds))
    assert not {"is_fraud", "label_available_at"} & set(features.columns)  # fraud's extract returns no label
    store.write_parquet(features, steps.uri(bare, layout.FEATURES, day.ds))
    rows = _day(tx, day)[["transaction_id", "ts", "is_fraud"]].assign(
        labelled_at=lambda d: d["ts"] + pd.Timedelta(days=2)
    )
    result = steps.labels_step(bare, store, RUN, _labels_engine(tmp_path, rows))
    assert result["days"] == {day.ds: {"rows": len(rows), "labelled": len(rows), "corrected": 0}}
    got = steps.load_labelled(store, [steps.uri(bare, layout.FEATURES, day.ds)], bare, RUN.end)
    assert list(got["transaction_id"]) == list(features["transaction_id"])  # the features' order is kept
    assert (got["is_fraud"].to_numpy() == rows["is_fraud"].to_numpy()).all()
    # as of the next day's end: none known yet (each label arrives two days after its transaction)
    assert steps.load_labelled(store, [steps.uri(bare, layout.FEATURES, day.ds)], bare, DAYS[5].start).empty
    window, _ = labelled_window(bare, store, RUN, ["amount"], 10**6)
    assert len(window) == len(rows) and window["is_fraud"].sum() == rows["is_fraud"].sum()


def test_a_corrected_label_replaces_the_earlier_one_and_is_counted(store, world, tmp_path):
    cfg, tx = world
    day = _day(tx, DAYS[3])
    a, b, c, d = day["transaction_id"].iloc[:4]
    t = pd.Timestamp(DAYS[4].ds)
    after_end = pd.Timestamp(RUN.end.replace(tzinfo=None)) + pd.Timedelta(hours=1)
    rows = pd.DataFrame(
        [
            (a, 0, t),
            (a, 1, t + pd.Timedelta(days=2, hours=6)),  # confirmed legitimate, then charged back: corrected
            (b, 1, t),
            (b, 0, t + pd.Timedelta(days=1)),
            (b, 0, t + pd.Timedelta(days=2)),  # reversed once
            (c, 1, t),
            (c, 1, t + pd.Timedelta(days=1)),  # the same label twice: no correction
            (d, 0, t),
            (d, 1, after_end),  # a correction after the run's end is not known yet
        ],
        columns=["transaction_id", "is_fraud", "labelled_at"],
    )
    result = steps.labels_step(cfg, store, RUN, _labels_engine(tmp_path, rows))
    part = _labels(store, cfg, DAYS[3].ds).set_index("id")
    assert part["label"].to_dict() == {a: 1, b: 0, c: 1, d: 0}
    at = part["labelled_at"].dt.tz_convert(None)
    # the time the current label first became known: b's reversal, c's first label
    assert at.to_dict() == {a: t + pd.Timedelta(days=2, hours=6), b: t + pd.Timedelta(days=1), c: t, d: t}
    assert _summary(store, cfg, DAYS[3].ds)["corrected"] == 2
    assert result["corrected"] == 2 and result["days"][DAYS[3].ds]["labelled"] == 4
    # Training as of an earlier day (D5's end: D3 has just matured) sees a's label only once it is known (its
    # first label was replaced).
    early = steps.load_labelled(store, [steps.uri(cfg, layout.FEATURES, DAYS[3].ds)], cfg, DAYS[5].end)
    assert set(early["transaction_id"]) == {b, c, d}


def test_a_label_for_an_unknown_or_too_old_id_is_counted_and_logged(store, world, tmp_path):
    cfg, tx = world
    short = _cfg("fraud_labels_unmatched", trailing_days=3)  # its window: D5..D7
    _copy_features(store, cfg, short, DAYS)
    old = _day(tx, DAYS[1])["transaction_id"].iloc[:3]  # events before the window, labelled on D6
    fresh = _day(tx, DAYS[6])["transaction_id"].iloc[:2]
    rows = pd.DataFrame(
        {
            "transaction_id": [*old, *fresh, "t-never-seen", "t-also-unknown"],
            "is_fraud": [1, 1, 0, 0, 1, 1, 0],
            "labelled_at": [pd.Timestamp(DAYS[6].ds)] * 5 + [pd.Timestamp(RUN.ds) + pd.Timedelta(hours=3)] * 2,
        }
    )
    engine = _labels_engine(tmp_path, rows)
    result = steps.labels_step(short, store, RUN, engine)
    assert result["window"] == f"{DAYS[5].ds}..{RUN.ds}" and sorted(result["days"]) == [d.ds for d in DAYS[5:]]
    assert result["unmatched"] == 5 and result["unmatched_new"] == 2  # two of them arrived during the run's day
    assert result["unmatched_examples"] == sorted([*old, "t-also-unknown", "t-never-seen"])
    assert result["days"][DAYS[6].ds]["labelled"] == 2
    (record,) = store.read_jsonl(layout.unmatched_labels_log(short.prefix()))
    assert (record["ds"], record["unmatched"], record["unmatched_new"]) == (RUN.ds, 5, 2)
    steps.labels_step(short, store, RUN, engine)  # a re-run does not log the same labels twice
    assert len(store.read_jsonl(layout.unmatched_labels_log(short.prefix()))) == 1


def test_a_rerun_rewrites_identical_bytes(store, world, tmp_path):
    cfg, tx = world
    rerun = _cfg("fraud_labels_rerun")
    _copy_features(store, cfg, rerun, DAYS)
    table = _truth(tx)
    table = pd.concat(
        [table, pd.DataFrame({"transaction_id": ["t-unknown"], "is_fraud": [1], "labelled_at": [pd.Timestamp(RUN.ds)]})]
    )
    engine = _labels_engine(tmp_path, table)
    steps.labels_step(rerun, store, RUN, engine)
    prefix = layout.stage_prefix(rerun.prefix(), layout.LABELS) + "/"
    before = {u: store.get_bytes(u) for u in store.list(prefix)}
    assert len(before) == 2 * len(DAYS) + 1  # data + summary per day, and the unmatched log
    steps.labels_step(rerun, store, RUN, engine)
    after = {u: store.get_bytes(u) for u in store.list(prefix)}
    assert after == before


def test_gateway_feedback_is_a_second_source(store, world, tmp_path):
    cfg, tx = world
    fb_cfg = _cfg("fraud_feedback", feedback=True)
    day = DAYS[4]
    _copy_features(store, cfg, fb_cfg, [day])
    x, y = _day(tx, day)["transaction_id"].iloc[:2]
    t = pd.Timestamp(day.ds, tz="UTC") + pd.Timedelta(hours=10)
    logs = pd.DataFrame(
        {"request_id": ["r1", "r1", "r2"], "row": [0, 1, 0], "ts": [t] * 3, "transaction_id": [x, y, "t-not-a-feature"]}
    )
    store.write_parquet(
        logs,
        layout.hourly_part(layout.stage_prefix(fb_cfg.prefix(), layout.SERVING_LOGS), day.ds, 10, "part-1.parquet"),
    )
    fb_ts = pd.Timestamp(DAYS[5].ds, tz="UTC") + pd.Timedelta(hours=9)
    feedback = pd.DataFrame(
        {"request_id": ["r1", "r1", "r2", "r9"], "row": [0, 1, 0, 0], "label": [1, 0, 1, 1], "ts": [fb_ts] * 4}
    )
    store.write_parquet(
        feedback,
        layout.hourly_part(layout.stage_prefix(fb_cfg.prefix(), layout.FEEDBACK), DAYS[5].ds, 9, "part-1.parquet"),
    )
    # The table: x confirmed legitimate before its chargeback was posted to the gateway; y confirmed later.
    table = pd.DataFrame(
        {
            "transaction_id": [x, y],
            "is_fraud": [0, 0],
            "labelled_at": [pd.Timestamp(DAYS[5].ds) + pd.Timedelta(hours=1), pd.Timestamp(DAYS[6].ds)],
        }
    )
    result = steps.labels_step(fb_cfg, store, RUN, _labels_engine(tmp_path, table))
    assert result["labels_read"] == {"table": 2, "feedback": 4}
    assert result["feedback_unresolved"] == 1  # r9: no logged request
    assert result["unmatched"] == 1 and result["unmatched_examples"] == ["t-not-a-feature"]
    part = _labels(store, fb_cfg, day.ds).set_index("id")
    assert part["label"].to_dict() == {x: 1, y: 0}
    assert part["source"].to_dict() == {x: "feedback", y: "feedback"}  # y's label was known from the gateway first
    assert result["corrected"] == 1  # x: 0 from the table, then 1 from the gateway


def test_without_labels_the_label_available_at_mode_is_unchanged(store, tmp_path):
    """A pipeline whose source row carries the label and when it became known (tumors): no labels task, the
    label comes from the features, a row counts once its ``label_available_at`` has passed."""
    from ml_ops.local.sim import generate_tumors

    plain = load_pipeline_by_name("tumors").model_copy(update={"name": "tumors_in_row_labels"})
    assert plain.labels is None and plain.target.label_available_column == "label_available_at"
    url = f"sqlite:///{tmp_path / 'tumors.db'}"
    load_source(url, "tumors", generate_tumors(D0, 2, rows_per_day=150, seed=3, label_delay_days=1))
    engine = sa.create_engine(url)
    for day in DAYS[:2]:
        steps.extract_step(plain, store, day, engine)
        steps.validate_step(plain, store, day)
        steps.features_step(plain, store, day)
    engine.dispose()
    part = steps.uri(plain, layout.FEATURES, DAYS[0].ds)
    features = store.read_parquet(part)
    assert {"malignant", "label_available_at"} <= set(features.columns)  # the source's label columns are kept
    known_at = datetime.fromisoformat(f"{DAYS[1].ds}T12:00:00+00:00")
    got = steps.load_labelled(store, [part], plain, known_at)
    expected = features[pd.to_datetime(features["label_available_at"], utc=True) <= pd.Timestamp(known_at)]
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    assert 0 < len(got) < len(features)  # label_delay_days 1 + jitter: part of the day is labelled by noon


def test_labels_config():
    cfg = _cfg()
    assert labels_mod.query_columns(cfg) == ("transaction_id", "is_fraud", "labelled_at")
    assert cfg.labels.trailing_days == 35 and cfg.labels.feedback is False and cfg.labels.conn_id is None
    assert labels_mod.window_days(cfg, RUN)[0] == (RUN.day - timedelta(days=34)).isoformat()
    assert Labels(feedback=True).sql is None  # the gateway's feedback alone is a source
    with pytest.raises(ValidationError, match="labels need a source"):
        Labels()
    with pytest.raises(ValidationError, match="SQL file not found"):
        Labels(sql="sql/no_such_labels.sql")
    with pytest.raises(ValidationError, match="trailing_days"):
        Labels(sql="sql/fraud_labels.sql", trailing_days=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        Labels(sql="sql/fraud_labels.sql", colour="blue")


def test_the_training_dag_has_a_labels_task_only_with_labels():
    from ml_ops.airflow.dag_factory import build_training_dag

    with_labels = build_training_dag(_cfg("fraud_dag"))
    assert with_labels.get_task("features").downstream_task_ids == {"labels"}
    assert with_labels.get_task("labels").downstream_task_ids == {"train"}
    assert type(with_labels.get_task("labels")).__name__ == "LabelsOperator"
    assert load_pipeline_by_name("fraud").labels is not None  # the shipped fraud pipeline runs on its labels table
    assert "labels" in build_training_dag(load_pipeline_by_name("fraud")).task_ids
    without = build_training_dag(load_pipeline_by_name("tumors"))
    assert "labels" not in without.task_ids and without.get_task("features").downstream_task_ids == {"train"}


def test_sim_labels_reach_the_partitions(store, world, tmp_path):
    """The simulator's own labels table (chargeback delays, negatives after maturity) through the step."""
    cfg, tx = world
    sim = generate_labels(tx, seed=3, maturity_days=2)
    result = steps.labels_step(cfg, store, RUN, _labels_engine(tmp_path, sim))
    end = pd.Timestamp(RUN.end.replace(tzinfo=None))
    known = sim[sim["labelled_at"] < end]
    assert result["labels_read"] == {"table": len(known)}
    latest = known.sort_values("labelled_at", kind="mergesort").drop_duplicates("transaction_id", keep="last")
    assert result["labelled"] == len(latest) and result["unmatched"] == 0
    assert result["corrected"] == int(known.duplicated("transaction_id").sum())  # 0 then 1: each is a correction
    d0 = _labels(store, cfg, DAYS[0].ds).set_index("id")["label"]  # a week old: matured, every row labelled
    assert len(d0) == len(_day(tx, DAYS[0]))
    assert (d0 == latest.set_index("transaction_id")["is_fraud"][d0.index]).all()
    positives = sum(_summary(store, cfg, d.ds)["positives"] for d in DAYS)
    assert positives < tx["is_fraud"].sum()  # the young days' chargebacks are still to come
