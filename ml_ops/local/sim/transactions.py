"""Seeded card-transaction simulator (the fraud pipeline's source data).

Every day is generated on its own from a seed derived from (seed, day), and the customer population depends only
on (seed, n_customers, events), so any day's rows are identical however the range is split into loads.

Fraud carries learnable signal. Before a ``ConceptChange`` it is card-not-present / account-takeover fraud: amounts
far above the customer's usual, foreign countries, online with unknown or unusual devices, night hours, risky
categories, young accounts and bursts of several transactions within minutes. From a ``ConceptChange`` on it is
card-testing / skimming: many small domestic contactless or chip purchases at fuel and grocery merchants in short
bursts, against older customers, which a model trained on the first pattern mostly misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

CATEGORIES = np.array(
    [
        "grocery",
        "restaurants",
        "fuel",
        "electronics",
        "travel",
        "fashion",
        "online_services",
        "gambling",
        "health",
        "other",
    ],
    dtype=object,
)
_CAT_P = np.array([0.30, 0.16, 0.10, 0.04, 0.03, 0.08, 0.10, 0.01, 0.06, 0.12])
_CAT_AMOUNT = np.array([1.0, 0.9, 1.4, 5.0, 6.0, 2.2, 0.5, 1.2, 1.3, 1.0])  # typical spend relative to grocery
_RISKY_CATS = np.array([3, 6, 7, 4, 5])  # electronics, online_services, gambling, travel, fashion
_RISKY_P = np.array([0.35, 0.25, 0.15, 0.15, 0.10])
_SKIM_CATS = np.array([2, 0, 9, 1])  # fuel, grocery, other, restaurants
_SKIM_P = np.array([0.35, 0.30, 0.20, 0.15])
_OTHER = 9

CHANNELS = np.array(["pos", "online", "atm", "contactless"], dtype=object)
POS, ONLINE, ATM, CONTACTLESS = range(4)
_CHAN_P = np.array([0.30, 0.25, 0.07, 0.38])

DEVICES = np.array(["mobile", "desktop", "terminal", "unknown"], dtype=object)
MOBILE, DESKTOP, TERMINAL, UNKNOWN = range(4)

COUNTRIES = np.array(
    [
        "DE",
        "AT",
        "NL",
        "FR",
        "PL",
        "IT",
        "ES",
        "BE",  # 0-7 home market
        "GB",
        "IE",
        "SE",
        "PT",
        "US",  # 8-12 covariate-shift segment / online merchants
        "CH",
        "TR",
        "TH",
        "GR",
        "HR",
        "LU",
        "CN",
        "NG",
        "RU",
        "BR",
        "AE",
        "RO",
    ],
    dtype=object,
)
_HOME_P = np.zeros(len(COUNTRIES))
_HOME_P[:8] = [0.55, 0.10, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04]
_SEGMENT_HOME_P = np.zeros(len(COUNTRIES))
_SEGMENT_HOME_P[8:13] = [0.40, 0.15, 0.15, 0.15, 0.15]
_TRAVEL_P = np.zeros(len(COUNTRIES))
_TRAVEL_P[[6, 5, 3, 12, 8, 13, 14, 15, 16, 17]] = [0.2, 0.15, 0.12, 0.1, 0.1, 0.08, 0.08, 0.06, 0.06, 0.05]
_ONLINE_MERCHANT_P = np.zeros(len(COUNTRIES))
_ONLINE_MERCHANT_P[[12, 8, 9, 2, 18, 19]] = [0.35, 0.2, 0.15, 0.1, 0.1, 0.1]
_FRAUD_COUNTRY_P = np.zeros(len(COUNTRIES))
_FRAUD_COUNTRY_P[[20, 21, 22, 19, 12, 8, 23, 24, 14]] = [0.18, 0.16, 0.12, 0.12, 0.12, 0.1, 0.08, 0.07, 0.05]

# Share of the day's transactions per hour (UTC), and relative volume per weekday (Mon..Sun).
_HOUR_W = np.array(
    [
        0.6,
        0.35,
        0.25,
        0.2,
        0.2,
        0.35,
        0.9,
        1.8,
        2.8,
        3.5,
        4.0,
        4.5,
        5.2,
        5.0,
        4.6,
        4.4,
        4.6,
        5.2,
        5.6,
        5.2,
        4.4,
        3.4,
        2.2,
        1.2,
    ]
)
_HOUR_CUM = np.cumsum(_HOUR_W) / _HOUR_W.sum()
_WEEKDAY = np.array([0.95, 0.97, 0.99, 1.0, 1.08, 1.12, 0.89])
_ANCHOR = date(2000, 1, 1).toordinal()  # account ages are computed from absolute dates, never from `start`

# Fraud rates per base transaction before bursts, calibrated for ~2.5 % fraud rows overall.
_BASE_FRAUD_A = 0.0098
_BASE_FRAUD_B = 0.0060

COLUMNS = [
    "transaction_id",
    "ts",
    "customer_id",
    "amount",
    "merchant_category",
    "channel",
    "country",
    "device",
    "customer_age",
    "account_age_days",
    "is_fraud",
    "label_available_at",
]


@dataclass(frozen=True)
class CovariateShift:
    """From `day` on, `share` of the daily volume comes from a new segment: young customers with fresh accounts in
    new countries, smaller amounts, mostly online on mobile. The fraud mechanism itself is unchanged."""

    day: date
    share: float = 0.3


@dataclass(frozen=True)
class ConceptChange:
    """From `day` on, fraud switches from card-not-present takeover to small-amount card testing / skimming."""

    day: date


Event = CovariateShift | ConceptChange


@dataclass
class _Population:
    prefix: np.ndarray  # "c00012-" per customer; the account generation number is appended per day
    age: np.ndarray
    mu: np.ndarray  # log of the customer's typical grocery-sized amount
    sigma: np.ndarray
    home: np.ndarray  # index into COUNTRIES
    device: np.ndarray  # primary online device: MOBILE or DESKTOP
    cat_cum: np.ndarray  # (n, len(CATEGORIES)) cumulative preferences
    chan_cum: np.ndarray  # (n, len(CHANNELS))
    activity: np.ndarray  # relative transaction frequency, sums to the population's share of volume
    opened: np.ndarray  # ordinal day the first account of this slot was opened
    lifetime: np.ndarray  # days until the slot's customer churns and a new customer (new id, age 0) takes it

    @staticmethod
    def concat(pops: list[_Population]) -> _Population:
        return _Population(*(np.concatenate([getattr(p, f) for p in pops]) for f in _Population.__dataclass_fields__))


def _cum(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=-1)
    c = c / c[..., -1:]
    c[..., -1] = 1.0
    return c


def _main_population(seed: int, n: int) -> _Population:
    rng = np.random.default_rng([seed, 0])
    lifetime = rng.integers(365, 15 * 365, n)
    return _Population(
        prefix=np.array([f"c{k:05d}-" for k in range(n)], dtype=object),
        age=np.clip(rng.normal(44, 15, n), 18, 90).astype(np.int64),
        mu=rng.normal(np.log(28), 0.45, n),
        sigma=rng.uniform(0.45, 0.8, n),
        home=rng.choice(len(COUNTRIES), n, p=_HOME_P),
        device=np.where(rng.random(n) < 0.65, MOBILE, DESKTOP),
        cat_cum=_cum(rng.dirichlet(_CAT_P * 20, n)),
        chan_cum=_cum(rng.dirichlet(_CHAN_P * 12, n)),
        activity=rng.lognormal(0, 0.7, n),
        opened=_ANCHOR - rng.integers(0, lifetime),
        lifetime=lifetime,
    )


def _segment_population(seed: int, n_customers: int, ev: CovariateShift) -> _Population:
    rng = np.random.default_rng([seed, 1, ev.day.toordinal()])
    n = max(20, round(n_customers * ev.share))
    cat_p = _CAT_P * np.array([0.6, 1.5, 0.3, 1.2, 0.8, 1.8, 2.5, 2.0, 0.5, 1.0])
    chan_p = np.array([0.15, 0.55, 0.05, 0.25])
    return _Population(
        prefix=np.array([f"s{ev.day:%y%m%d}{k:05d}-" for k in range(n)], dtype=object),
        age=rng.integers(18, 28, n),
        mu=rng.normal(np.log(16), 0.35, n),
        sigma=rng.uniform(0.5, 0.9, n),
        home=rng.choice(len(COUNTRIES), n, p=_SEGMENT_HOME_P),
        device=np.where(rng.random(n) < 0.9, MOBILE, DESKTOP),
        cat_cum=_cum(rng.dirichlet(cat_p / cat_p.sum() * 20, n)),
        chan_cum=_cum(rng.dirichlet(chan_p * 12, n)),
        activity=rng.lognormal(0, 0.7, n),
        opened=ev.day.toordinal() - rng.integers(0, 60, n),  # acquired in a campaign just before the shift
        lifetime=np.full(n, 10 * 365),
    )


def _pick(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Sample a category per row from the row's customer's cumulative preferences (vectorised)."""
    k = cum.shape[1]
    flat = (cum + np.arange(cum.shape[0])[:, None]).ravel()
    return np.searchsorted(flat, rows + u, side="right") - rows * k


def _hours(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.searchsorted(_HOUR_CUM, rng.random(n), side="right")


def _generate_day(
    day: date, rows_per_day: int, pop: _Population, concept_b: bool, seed: int, label_delay_days: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, day.toordinal()])
    d = day.toordinal()
    n_target = max(1, round(rows_per_day * _WEEKDAY[day.weekday()] * np.exp(rng.normal(0, 0.02))))
    n_pop = len(pop.age)

    # Per-customer state of the day: account generation/age and whether they are travelling.
    since = d - pop.opened
    account_age = since % pop.lifetime
    ids_today = pop.prefix + (since // pop.lifetime).astype(str).astype(object)
    travel_dest = np.where(rng.random(n_pop) < 0.03, rng.choice(len(COUNTRIES), n_pop, p=_TRAVEL_P), -1)

    # Base transactions, drawn as legitimate behaviour of the customer.
    n = n_target
    act_cum = _cum(pop.activity)
    # Sorted draws give customer-ordered rows, which keeps the searchsorted lookups cache friendly; rows are
    # reordered by time at the end anyway.
    cust = np.minimum(np.searchsorted(act_cum, np.sort(rng.random(n)), side="right"), n_pop - 1)
    chan = _pick(pop.chan_cum, cust, rng.random(n))
    cat = _pick(pop.cat_cum, cust, rng.random(n))
    cat[chan == ATM] = _OTHER
    amount = np.exp(pop.mu[cust] + np.log(_CAT_AMOUNT[cat]) + pop.sigma[cust] * rng.standard_normal(n))
    in_person = chan != ONLINE
    dest = travel_dest[cust]
    country = np.where(in_person & (dest >= 0), dest, pop.home[cust])
    foreign_shop = ~in_person & (rng.random(n) < 0.10)
    country[foreign_shop] = rng.choice(len(COUNTRIES), foreign_shop.sum(), p=_ONLINE_MERCHANT_P)
    u = rng.random(n)
    device = np.where(
        in_person,
        TERMINAL,
        np.where(u < 0.92, pop.device[cust], np.where(u < 0.98, MOBILE + DESKTOP - pop.device[cust], UNKNOWN)),
    )
    sec = _hours(rng, n) * 3600 + rng.integers(0, 3600, n)

    # Who is defrauded, and how the fraudulent transactions look.
    if concept_b:
        p = _BASE_FRAUD_B * np.where(pop.age[cust] >= 65, 3.0, 1.0)
    else:
        age_acc = account_age[cust]
        p = (
            _BASE_FRAUD_A
            * np.where(age_acc < 90, 5.0, np.where(age_acc < 365, 2.0, 1.0))
            * np.where((pop.age[cust] < 25) | (pop.age[cust] > 75), 1.4, 1.0)
        )
    fraud = rng.random(n) < p
    f = np.flatnonzero(fraud)
    m = len(f)
    if concept_b:
        chan[f] = np.where(rng.random(m) < 0.75, CONTACTLESS, POS)
        device[f] = TERMINAL
        country[f] = np.where(rng.random(m) < 0.95, pop.home[cust[f]], rng.choice(len(COUNTRIES), m, p=_HOME_P))
        cat[f] = rng.choice(_SKIM_CATS, m, p=_SKIM_P)
        amount[f] = rng.uniform(1, 25, m)
    else:
        online = rng.random(m) < 0.45
        chan[f[online]] = ONLINE
        k = rng.random(m)
        dev_online = np.where(
            k < 0.25, UNKNOWN, np.where(k < 0.55, MOBILE + DESKTOP - pop.device[cust[f]], pop.device[cust[f]])
        )
        device[f] = np.where(chan[f] == ONLINE, dev_online, TERMINAL)
        foreign = rng.random(m) < 0.3
        country[f[foreign]] = rng.choice(len(COUNTRIES), foreign.sum(), p=_FRAUD_COUNTRY_P)
        risky = rng.random(m) < 0.35
        cat[f[risky]] = rng.choice(_RISKY_CATS, risky.sum(), p=_RISKY_P)
        cat[f[chan[f] == ATM]] = _OTHER
        base = np.exp(pop.mu[cust[f]] + np.log(_CAT_AMOUNT[cat[f]]) + pop.sigma[cust[f]] * rng.standard_normal(m))
        amount[f] = np.where(rng.random(m) < 0.45, base * np.exp(rng.normal(1.2, 0.5, m)), base)
        night = rng.random(m) < 0.25
        sec[f[night]] = rng.integers(0, 6 * 3600, night.sum())

    # Bursts: fraudsters fire several transactions within minutes; legit customers occasionally buy twice.
    if concept_b:
        burst_p, extra_mean, gap_mean, gap_min, cap = 0.6, 1.5, 180, 10, 8
        n_child_f = np.where(rng.random(m) < burst_p, np.minimum(2 + rng.poisson(extra_mean, m), cap), 0)
    else:
        burst_p, extra_mean, gap_mean, gap_min, cap = 0.35, 1.2, 240, 20, 5
        n_child_f = np.where(rng.random(m) < burst_p, np.minimum(1 + rng.poisson(extra_mean, m), cap), 0)
    legit = np.flatnonzero(~fraud)
    n_child_l = (rng.random(len(legit)) < 0.05).astype(np.int64)
    parents = np.concatenate([np.repeat(f, n_child_f), np.repeat(legit, n_child_l)])
    nc = len(parents)
    n_fc = int(n_child_f.sum())
    child_fraud = np.arange(nc) < n_fc
    # Children of one parent follow each other: cumulative gaps within each parent's run.
    gaps = np.where(child_fraud, gap_min + rng.exponential(gap_mean, nc), 30 + rng.exponential(900, nc))
    run_start = np.r_[0, np.flatnonzero(np.diff(parents) != 0) + 1] if nc else np.zeros(0, np.int64)
    csum = np.cumsum(gaps)
    run_base = np.repeat(np.r_[0.0, csum][run_start], np.diff(np.r_[run_start, nc]))
    c_sec = sec[parents] + (csum - run_base).astype(np.int64)
    c_cat = cat[parents].copy()
    c_amount = np.empty(nc)
    fc = np.flatnonzero(child_fraud)
    lc = np.flatnonzero(~child_fraud)
    if concept_b:
        c_cat[fc] = rng.choice(_SKIM_CATS, len(fc), p=_SKIM_P)
        c_amount[fc] = rng.uniform(1, 25, len(fc))
    else:
        c_cat[fc] = np.where(chan[parents[fc]] == ATM, _OTHER, rng.choice(_RISKY_CATS, len(fc), p=_RISKY_P))
        c_amount[fc] = amount[parents[fc]] * np.exp(rng.normal(0, 0.4, len(fc)))
    c_cat[lc] = np.where(chan[parents[lc]] == ATM, _OTHER, _pick(pop.cat_cum, cust[parents[lc]], rng.random(len(lc))))
    pl = cust[parents[lc]]
    c_amount[lc] = np.exp(pop.mu[pl] + np.log(_CAT_AMOUNT[c_cat[lc]]) + pop.sigma[pl] * rng.standard_normal(len(lc)))

    cust = np.concatenate([cust, cust[parents]])
    chan = np.concatenate([chan, chan[parents]])
    cat = np.concatenate([cat, c_cat])
    amount = np.concatenate([amount, c_amount])
    country = np.concatenate([country, country[parents]])
    device = np.concatenate([device, device[parents]])
    sec = np.concatenate([sec, c_sec])
    is_fraud = np.concatenate([fraud, child_fraud]).astype(np.int64)

    # ATM withdrawals are round sums; everything else is rounded to cents.
    atm = chan == ATM
    amount[atm] = 20.0 * np.clip(np.round(amount[atm] * 3 / 20), 1, 25)
    amount = np.maximum(np.round(amount, 2), 0.5)

    # Keep the day partition pure (bursts may run past midnight) and the volume at the target.
    keep = sec < 86400
    extra = int(keep.sum()) - n_target
    if extra > 0:
        has_child = np.zeros(len(keep), bool)
        has_child[parents] = True
        droppable = np.flatnonzero(keep[:n] & ~fraud & ~has_child[:n])
        keep[rng.choice(droppable, min(extra, len(droppable)), replace=False)] = False
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(sec[idx], kind="stable")]

    cnt = len(idx)
    day_ns = np.datetime64(day, "ns")
    ts = day_ns + sec[idx].astype("timedelta64[s]")
    jitter = np.clip(rng.gamma(2.0, 5400.0, cnt), 0, 12 * 3600).astype(np.int64)
    label_at = ts + np.timedelta64(label_delay_days, "D") + jitter.astype("timedelta64[s]")
    prefix = f"t{day:%Y%m%d}-"
    c = cust[idx]
    return {
        "transaction_id": np.array([f"{prefix}{i:06d}" for i in range(cnt)], dtype=object),
        "ts": ts,
        "customer_id": ids_today[c],
        "amount": amount[idx],
        "merchant_category": CATEGORIES[cat[idx]],
        "channel": CHANNELS[chan[idx]],
        "country": COUNTRIES[country[idx]],
        "device": DEVICES[device[idx]],
        "customer_age": pop.age[c].astype(np.int64),
        "account_age_days": account_age[c].astype(np.int64),
        "is_fraud": is_fraud[idx],
        "label_available_at": label_at,
    }


def generate_transactions(
    start: date,
    days: int,
    *,
    rows_per_day: int = 3000,
    n_customers: int = 2000,
    seed: int = 7,
    label_delay_days: int = 3,
    events: Sequence[Event] = (),
) -> pd.DataFrame:
    """Transactions for `days` days from `start` (about `rows_per_day` a day, varying by weekday), ordered by ts.

    A pure function of its arguments; a day's rows do not depend on `start` or `days`.
    """
    if days < 0 or rows_per_day < 1 or n_customers < 1:
        raise ValueError(f"days={days}, rows_per_day={rows_per_day}, n_customers={n_customers} must be positive")
    for ev in events:
        if not isinstance(ev, (CovariateShift, ConceptChange)):
            raise TypeError(f"unknown event {ev!r}")
        if isinstance(ev, CovariateShift) and not 0 < ev.share < 1:
            raise ValueError(f"CovariateShift.share must be in (0, 1), got {ev.share}")
    main = _main_population(seed, n_customers)
    segments = {ev: _segment_population(seed, n_customers, ev) for ev in events if isinstance(ev, CovariateShift)}
    pops: dict[tuple, _Population] = {}  # one population per set of active shifts
    parts: list[dict[str, np.ndarray]] = []
    for i in range(days):
        day = start + timedelta(days=i)
        active = tuple(sorted((ev for ev in segments if ev.day <= day), key=lambda e: (e.day, e.share)))
        if active not in pops:
            seg_share = min(sum(ev.share for ev in active), 0.9)
            members = [(main, 1 - seg_share)] + [
                (segments[ev], seg_share * ev.share / sum(e.share for e in active)) for ev in active
            ]
            scaled = []
            for p, share in members:
                q = _Population(**{f: getattr(p, f) for f in _Population.__dataclass_fields__})
                q.activity = p.activity / p.activity.sum() * share
                scaled.append(q)
            pops[active] = _Population.concat(scaled)
        concept_b = any(isinstance(ev, ConceptChange) and ev.day <= day for ev in events)
        parts.append(_generate_day(day, rows_per_day, pops[active], concept_b, seed, label_delay_days))
    if not parts:
        return _empty()
    return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COLUMNS})


def _empty() -> pd.DataFrame:
    dtypes = {
        "ts": "datetime64[ns]",
        "label_available_at": "datetime64[ns]",
        "amount": "float64",
        "customer_age": "int64",
        "account_age_days": "int64",
        "is_fraud": "int64",
    }
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in COLUMNS})


LABEL_COLUMNS = ["transaction_id", "is_fraud", "labelled_at"]
# The label as generate_transactions puts it in each row; a source whose labels arrive in their own table
# (generate_labels) holds the transactions without these columns.
LABEL_IN_ROW = ("is_fraud", "label_available_at")


def generate_labels(
    transactions: pd.DataFrame,
    seed: int = 7,
    *,
    maturity_days: float = 7.0,
    chargeback_days: tuple[float, float] = (1.0, 5.0),
    tail_share: float = 0.12,
    tail_mean_days: float = 10.0,
    max_delay_days: float = 60.0,
) -> pd.DataFrame:
    """The fraud labels of ``transactions`` as their own table (transaction_id, is_fraud, labelled_at), ordered
    by labelled_at, as a chargeback system would post them: most frauds are charged back ``chargeback_days``
    after the transaction (uniform), ``tail_share`` of them later (``chargeback_days[1]`` plus an exponential
    delay of mean ``tail_mean_days``, at most ``max_delay_days``); a legitimate transaction is confirmed
    (is_fraud 0) once it is ``maturity_days`` old, within a few hours. A fraud charged back after
    ``maturity_days`` was confirmed legitimate first: it has two rows, 0 then 1 (a correction).

    Each transaction day's labels are drawn from a seed derived from (seed, day), so they do not depend on
    which other days the frame holds."""
    lo, hi = chargeback_days
    if not 0 <= lo <= hi or maturity_days <= 0 or not 0 <= tail_share <= 1 or max_delay_days < hi:
        raise ValueError(
            f"chargeback_days={chargeback_days}, maturity_days={maturity_days}, tail_share={tail_share}, "
            f"max_delay_days={max_delay_days}: need 0 <= low <= high <= max_delay_days, maturity > 0, share in [0, 1]"
        )
    if not len(transactions):
        dtypes = {"transaction_id": object, "is_fraud": "int64", "labelled_at": "datetime64[ns]"}
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    ts = pd.to_datetime(transactions["ts"]).to_numpy()
    fraud = transactions["is_fraud"].to_numpy().astype(bool)
    day = ts.astype("datetime64[D]")
    delay = np.empty(len(ts))  # days from the transaction to its final label
    confirm = np.empty(len(ts))  # days to the "legitimate" confirmation (NaN: none)
    for d in np.unique(day):
        rows = np.flatnonzero(day == d)
        rng = np.random.default_rng([seed, 2, pd.Timestamp(d).date().toordinal()])
        n = len(rows)
        chargeback = np.where(
            rng.random(n) < tail_share,
            np.minimum(hi + rng.exponential(tail_mean_days, n), max_delay_days),
            rng.uniform(lo, hi, n),
        )
        matured = maturity_days + rng.gamma(2.0, 2.0, n) / 24  # hours after the maturity period
        delay[rows] = np.where(fraud[rows], chargeback, matured)
        confirm[rows] = np.where(fraud[rows] & (chargeback > matured), matured, np.nan)
    at = ts + (delay * 86400).astype("timedelta64[s]")
    first = ~np.isnan(confirm)
    ids = transactions["transaction_id"].to_numpy()
    out = pd.DataFrame(
        {
            "transaction_id": np.concatenate([ids, ids[first]]),
            "is_fraud": np.concatenate([fraud.astype(np.int64), np.zeros(int(first.sum()), np.int64)]),
            "labelled_at": np.concatenate([at, ts[first] + (confirm[first] * 86400).astype("timedelta64[s]")]),
        }
    )
    out["labelled_at"] = out["labelled_at"].astype("datetime64[ns]")
    return out.sort_values(["labelled_at", "transaction_id"], kind="mergesort").reset_index(drop=True)
