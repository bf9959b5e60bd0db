"""Honest lift (hq.lift): Newcombe's interval against the published values, its
coverage over many simulated plantings, and the arms and conversions HQ counts from a
real SQLite file (decisions from the event log, purchases from the till table)."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from aislecast.kernel.campaign import Attribution, Campaign, Creative, check_hq_settings
from aislecast.kernel.schema import Event
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.ingest import Ingest
from hq.lift import newcombe_diff, wilson
from tests.purchases import add_purchase


def test_wilson_and_newcombe_match_the_published_examples() -> None:
    # Newcombe (1998) table II, method 10: (a) 56/70 - 48/80, (b) 9/10 - 3/10, (e) 5/56 - 0/29
    for (x_t, n_t, x_c, n_c), (lo, hi) in {(56, 70, 48, 80): (0.0524, 0.3339),
                                           (9, 10, 3, 10): (0.1705, 0.8090),
                                           (5, 56, 0, 29): (-0.0381, 0.1926)}.items():
        _, got_lo, got_hi = newcombe_diff(x_t, n_t, x_c, n_c)
        assert (round(got_lo, 4), round(got_hi, 4)) == (lo, hi)
    lo, hi = wilson(0, 30)
    assert lo == 0.0 and 0.11 < hi < 0.12  # no zero-width interval at 0 conversions
    with pytest.raises(ValueError, match="both arms"):
        newcombe_diff(0, 0, 1, 10)


def _coverage(rng: random.Random, sizes: tuple[int, int], plantings: int) -> float:
    covered = 0
    for _ in range(plantings):
        n_t, n_c = rng.randint(*sizes), rng.randint(*sizes)
        p_c = rng.uniform(0.05, 0.5)
        p_t = min(0.95, p_c + rng.uniform(0.0, 0.15))
        x_t = sum(rng.random() < p_t for _ in range(n_t))
        x_c = sum(rng.random() < p_c for _ in range(n_c))
        _, lo, hi = newcombe_diff(x_t, n_t, x_c, n_c)
        covered += lo <= p_t - p_c <= hi
    return covered / plantings


@pytest.mark.parametrize(("sizes", "plantings"), [((30, 60), 3000), ((300, 1000), 1000)],
                         ids=["small-counts", "large-counts"])
def test_95_intervals_cover_the_true_lift_95_percent(sizes: tuple[int, int], plantings: int) -> None:
    """Plant conversions with known rates (fixed seed); the share of intervals that hold
    the true difference is the interval's real coverage."""
    share = _coverage(random.Random(20261202), sizes, plantings)
    assert 0.93 <= share <= 0.97, share


def _campaign(db: HqDb, **attribution: object) -> None:
    c = Campaign(id="c", name="c", stores=["s"], creatives=[Creative("a", "A"), Creative("b", "B")],
                 attribution=Attribution(**attribution))  # type: ignore[arg-type]
    db.execute("INSERT INTO campaigns (id, body, status, updated_at) VALUES ('c', ?, 'live', 0)",
               (msgspec.json.encode(c).decode(),))


def _plant(db: HqDb, treated: int, control: int, *, buy: bool = True) -> None:
    """``treated`` offered shoppers (variants a, b alternating) and ``control`` holdouts
    at t0 = 1000 + i; every third shopper of each arm buys 250 cents within an hour."""
    ev = []
    for i in range(treated + control):
        held = i >= treated
        ev.append(Event(id=f"d{i}", kind="decision", ts=1000.0 + i, store="s", campaign="c",
                        inbox=f"i{i}", reason="holdout" if held else "offer",
                        variant=None if held else "ab"[i % 2], holdout=True if held else None))
        # a later decision never moves t0
        ev.append(Event(id=f"e{i}", kind="decision", ts=50_000.0 + i, store="s", campaign="c",
                        inbox=f"i{i}", reason="holdout" if held else "offer",
                        variant=None if held else "b"))
    Ingest(db).store_events(ev)
    for i in range(treated + control):
        if buy and i % 3 == 0:
            add_purchase(db, store="s", inbox=f"i{i}", ts=1000.0 + i + 3600, value_cents=250)


def test_arms_and_conversions_from_decisions_and_till_purchases(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    _campaign(db, window_s=7200.0, min_per_arm=30)
    _plant(db, treated=90, control=60)
    # not conversions: before t0, after the window, another store, no inbox
    add_purchase(db, store="s", inbox="i1", ts=900.0, value_cents=999)
    add_purchase(db, store="s", inbox="i2", ts=1002.0 + 7201, value_cents=999)
    add_purchase(db, store="other", inbox="i4", ts=1010.0, value_cents=999)
    add_purchase(db, store="s", inbox=None, ts=1010.0, value_cents=999)
    [s] = campaign_stats(db, "c")
    assert s.overall is not None
    o = s.overall
    assert (s.treated, s.control, o.converted_treated, o.converted_control) == (90, 60, 30, 20)
    assert s.lift_status == "ok" and s.attribution_s == 7200.0 and s.min_per_arm == 30
    assert s.lift == 0.0 and s.lift_lo is not None and s.lift_hi is not None
    assert s.lift_lo < 0 < s.lift_hi
    assert s.overall.incremental_conversions == 0.0 and s.overall.incremental_revenue_cents == 0
    # per variant, each against the whole holdout; a: i0, i2... (every third of them buys)
    assert [(v.variant, v.treated, v.control, v.converted_treated) for v in s.variants] == [
        ("a", 45, 60, 15), ("b", 45, 60, 15)]
    assert all(v.status == "ok" for v in s.variants)
    # a second purchase in the window adds revenue, not a second conversion
    add_purchase(db, store="s", inbox="i0", ts=1100.0, value_cents=9_000)
    [s] = campaign_stats(db, "c")
    assert s.overall is not None
    assert s.overall.converted_treated == 30 and s.overall.incremental_revenue_cents == 9_000
    lo, hi = s.overall.incremental_revenue_lo, s.overall.incremental_revenue_hi
    assert lo is not None and hi is not None and lo < 9_000 < hi


def test_only_the_promoted_lines_convert_when_the_campaign_names_them(db: HqDb) -> None:
    _campaign(db, window_s=7200.0, products=["sku-9"], categories=["wine"])
    _plant(db, treated=40, control=40)  # every third shopper buys sku-1: not promoted
    [s] = campaign_stats(db, "c")
    assert s.overall is not None
    assert (s.overall.converted_treated, s.overall.converted_control) == (0, 0)
    assert s.overall.revenue_treated_cents == 0
    add_purchase(db, store="s", inbox="i0", ts=1100.0, value_cents=500, product=None,
                 category="wine")  # treated, by category
    add_purchase(db, store="s", inbox="i3", ts=1100.0, value_cents=700, product="sku-9")
    add_purchase(db, store="s", inbox="i40", ts=1100.0, value_cents=300, product="sku-9",
                 category="staples")  # holdout, by product
    add_purchase(db, store="s", inbox="i41", ts=1100.0, value_cents=300, category="beer")
    [s] = campaign_stats(db, "c")
    assert s.overall is not None
    o = s.overall
    assert (o.converted_treated, o.converted_control) == (2, 1)
    assert (o.revenue_treated_cents, o.revenue_control_cents) == (1_200, 300)  # sku-1 left out
    named = Campaign(id="x", name="x", stores=["s"], creatives=[Creative("a", "A")],
                               attribution=Attribution(categories=["ok", "not ok"],
                                                       products=list("p" * 201)))
    problems = check_hq_settings(named)
    assert any("'not ok' is not a till line id" in p for p in problems), problems
    assert any("201 entries, at most 200" in p for p in problems), problems


def test_no_lift_number_below_the_minimum_sample(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    _campaign(db, min_per_arm=30)
    _plant(db, treated=40, control=29)
    [s] = campaign_stats(db, "c")
    assert s.overall is not None
    assert s.lift_status == "not_enough_data"
    assert (s.treated, s.control, s.overall.converted_treated, s.overall.converted_control) == (40, 29, 14, 9)
    assert s.lift is None and s.lift_lo is None and s.overall.incremental_conversions is None
    assert [v.status for v in s.variants] == ["not_enough_data"] * 2


def test_with_no_till_purchases_nobody_converts(tmp_path: Path) -> None:
    """With no till purchases the arms are counted and nobody converts: a phone's own
    "redeemed" is not a conversion (the old code counted it for the treated arm only)."""
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    _campaign(db)
    _plant(db, treated=40, control=40, buy=False)
    Ingest(db).store_events([Event(id="r0", kind="offer_redeemed", ts=1001.0, store="s",
                                   campaign="c", inbox="i0", offer="o0")])
    [s] = campaign_stats(db, "c")
    assert s.overall is not None
    assert (s.treated, s.control, s.overall.converted_treated, s.overall.converted_control) == (40, 40, 0, 0)
    assert s.redemptions == 1 and s.lift == 0.0 and s.lift_status == "ok"
