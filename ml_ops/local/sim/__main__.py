"""python -m ml_ops.local.sim {fraud,tumors} --db URL --start YYYY-MM-DD --days N [options]: load simulated days."""

from __future__ import annotations

import argparse
from datetime import date

from ml_ops.local.sim import (
    ConceptChange,
    CovariateShift,
    generate_labels,
    generate_transactions,
    generate_tumors,
    load_source,
)
from ml_ops.local.sim.transactions import LABEL_IN_ROW


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ml_ops.local.sim", description=__doc__)
    p.add_argument("dataset", choices=["fraud", "tumors"])
    p.add_argument("--db", required=True, help="SQLAlchemy URL, e.g. sqlite:////tmp/source.db")
    p.add_argument("--start", required=True, type=date.fromisoformat)
    p.add_argument("--days", required=True, type=int)
    p.add_argument("--rows-per-day", type=int)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--table", help="default: transactions / tumors")
    p.add_argument("--n-customers", type=int, default=2000, help="fraud only")
    p.add_argument("--covariate-shift-day", type=date.fromisoformat, help="fraud only")
    p.add_argument("--covariate-shift-share", type=float, default=0.3, help="fraud only")
    p.add_argument("--concept-change-day", type=date.fromisoformat, help="fraud only")
    p.add_argument(
        "--labels-table",
        help="fraud only: write the labels to their own table (e.g. transaction_labels), with chargeback delays, "
        "and the transactions without them (no is_fraud, label_available_at), as a real source holds them",
    )
    a = p.parse_args(argv)

    if a.dataset == "fraud":
        events = []
        if a.covariate_shift_day:
            events.append(CovariateShift(a.covariate_shift_day, a.covariate_shift_share))
        if a.concept_change_day:
            events.append(ConceptChange(a.concept_change_day))
        df = generate_transactions(
            a.start, a.days, rows_per_day=a.rows_per_day or 3000, n_customers=a.n_customers, seed=a.seed, events=events
        )
        table, extra = a.table or "transactions", f", fraud rate {df.is_fraud.mean():.2%}" if len(df) else ""
    else:
        if a.covariate_shift_day or a.concept_change_day or a.labels_table:
            p.error("events and a labels table are only simulated for the fraud dataset")
        df = generate_tumors(a.start, a.days, rows_per_day=a.rows_per_day or 200, seed=a.seed)
        table, extra = a.table or "tumors", f", malignant {df.malignant.mean():.1%}" if len(df) else ""
    labels = None
    if a.labels_table:  # the label only in its own table, as include/pipelines/fraud.yaml reads it
        labels = generate_labels(df, a.seed)
        df = df.drop(columns=list(LABEL_IN_ROW))
    res = load_source(a.db, table, df, labels_table=a.labels_table, labels=labels, labels_seed=a.seed)
    print(
        f"loaded {res.rows_written} rows into {table} for {res.first_day}..{res.last_day} "
        f"(replaced {res.rows_deleted} existing rows{extra})"
    )
    if res.labels_table:
        print(f"loaded {res.labels_written} labels into {res.labels_table} (replaced {res.labels_deleted})")


if __name__ == "__main__":
    main()
