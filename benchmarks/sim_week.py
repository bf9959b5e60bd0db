"""A simulated week: shoppers x stores x campaigns on a simulated clock, driving the real
decision engine (two gateways per store, each its own SQLite file), then checking:

- no shopper exceeds any cap (per visit, per campaign, per day, all campaigns per
  visit, minimum gap), counted from the decision log;
- no offer outside its campaign's schedule, past its campaign end or in quiet hours;
- budgets never overspent by more than one in-flight offer per gateway (HQ tops up
  cumulative grants every simulated hour with :func:`hq.campaigns.top_up`);
- the holdout lift is recovered through the till: every visit ends at its store's till
  (:class:`aislecast.apps.till_sim.TillSim` on HQ's till desk, :mod:`benchmarks.sim_till`),
  where treated shoppers redeem their codes and every shopper buys each campaign first
  met on that visit at the base rate, plus the planted lift when they hold its offer;
  HQ ingests the decisions and :mod:`hq.lift` measures each campaign's lift from the
  purchases (its attribution counts its own category's lines, not the staples), pooled
  over campaigns and compared with the planted truth.

Peer gateways learn each other's charges with a lag (their event batches), as live.

    python -m benchmarks.sim_week                    # 10,000 shoppers, 5 stores, 50 campaigns
    python -m benchmarks.sim_week --shoppers 500 --stores 2 --campaigns 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import tempfile
import time
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from aislecast.apps.till_sim import TillSim, TillSimOptions
from aislecast.kernel.campaign import (
    Attribution,
    Budget,
    Campaign,
    Caps,
    Creative,
    Schedule,
    Trigger,
    Window,
)
from aislecast.kernel.schema import Event, Offer
from benchmarks.sim_till import DeskTill
from gateway.decisions import Decision, DecisionEngine, LocalClock, TriggerEvent, in_windows
from gateway.storage import open_db
from hq.campaigns import top_up
from hq.db import HqDb
from hq.ingest import Ingest
from hq.lift import Arm, arms, campaign_lift, newcombe_diff
from hq.redeem_keys import RedeemKeys
from hq.till import TillDesk, member_of

__all__ = ["simulate"]

TZ = "Europe/Berlin"
ZONES = ["entrance", "produce", "bakery", "dairy", "drinks", "checkout"]
GW_OF_ZONE = {z: ("gw-a" if i < 3 else "gw-b") for i, z in enumerate(ZONES)}
WEEK0 = dt.datetime(2025, 6, 9, tzinfo=zoneinfo.ZoneInfo(TZ)).timestamp()  # a Monday
PEER_LAG_S = 0.5  # an event batch interval plus the broker


@dataclass(frozen=True, slots=True)
class SimParams:
    shoppers: int = 10_000
    stores: int = 5
    campaigns: int = 50
    base_conv: float = 0.08
    true_lift: float = 0.04
    seed: int = 11


def _campaigns(p: SimParams, rng: random.Random) -> list[Campaign]:
    stores = [f"s{i}" for i in range(p.stores)]
    out = []
    for i in range(p.campaigns):
        kind = rng.choice(["enter", "enter", "dwell", "exit"])
        start = WEEK0 + rng.uniform(0, 3) * 86_400
        out.append(Campaign(
            id=f"c{i:02d}", name=f"c{i}", stores=rng.sample(stores, k=rng.randint(1, p.stores)),
            creatives=[Creative(id=v, title=v) for v in "ab"],
            trigger=Trigger(kind=kind, zones=rng.sample(ZONES, k=2),
                            min_dwell_s=20.0 if kind == "dwell" else 0.0),
            schedule=Schedule(start=start, end=start + rng.uniform(2, 5) * 86_400,
                              windows=[Window("08:00", "21:00")] if rng.random() < 0.3 else []),
            caps=Caps(per_shopper=1, per_campaign=rng.choice([None, 2, 3]),
                      per_day=rng.choice([None, 1]), per_visit_all=rng.choice([None, 2, 3]),
                      min_gap_s=rng.choice([0.0, 60.0, 300.0]),
                      quiet=[Window("20:00", "24:00")] if rng.random() < 0.3 else []),
            budget=Budget("impressions", rng.randint(100, 800)) if rng.random() < 0.3
            else Budget(),
            validity_s=rng.choice([900.0, 3600.0]), priority=rng.randint(0, 5),
            holdout_pct=rng.choice([10.0, 20.0, 30.0]),
            # what it promotes: the category the till simulator sells for it
            attribution=Attribution(categories=[f"c{i:02d}"], min_per_arm=10),
        ))
    return out


def _grant(camps: dict[str, Campaign], engines: dict[tuple[str, str], DecisionEngine],
           spent: dict[tuple[str, str], int]) -> None:
    """HQ's hourly top-up of cumulative grants, then a delta to every gateway."""
    for cid, c in list(camps.items()):
        if c.budget.kind == "none":
            continue
        gws = {f"{s}/{g}" for s in c.stores for g in ("gw-a", "gw-b")}
        by = {g: spent.get((cid, g), 0) for g in gws}
        new = top_up(c.budget, by, gws)
        if new != c.budget.grants:
            edited = camps[cid] = msgspec.structs.replace(
                c, budget=Budget(c.budget.kind, c.budget.total, new))
            for (s, _), e in engines.items():
                if s in c.stores:
                    e.upsert([edited])


def simulate(p: SimParams) -> dict[str, object]:
    rng = random.Random(p.seed)
    camps = {c.id: c for c in _campaigns(p, rng)}
    tmp = tempfile.TemporaryDirectory(prefix="simweek-")
    keys = RedeemKeys(random.Random(p.seed).randbytes(32))  # HQ's; each store's in its bundle
    engines: dict[tuple[str, str], DecisionEngine] = {}
    for si in range(p.stores):
        for g in ("gw-a", "gw-b"):
            e = DecisionEngine(open_db(Path(tmp.name) / f"s{si}-{g}.sqlite"), f"s{si}",
                               gateway=f"s{si}/{g}", rng=random.Random(si))
            e.load(list(camps.values()), [], tz=TZ, zones=ZONES)
            e.redeem_key = keys.of(f"s{si}")
            engines[f"s{si}", g] = e
    # every shopper's visits of the week, as trigger streams
    trig: list[tuple[float, str, str, TriggerEvent]] = []
    for k in range(p.shoppers):
        inbox = f"i{k:05d}"
        for v, day in enumerate(rng.sample(range(7), k=rng.randint(1, 4))):
            t = WEEK0 + day * 86_400 + rng.uniform(8, 23.5) * 3600
            store = f"s{rng.randrange(p.stores)}"
            visit = f"{inbox}-{v}"
            for z in ["entrance", *rng.sample(ZONES[1:5], k=rng.randint(1, 4)), "checkout"]:
                trig.append((t, store, z, TriggerEvent("enter", inbox, z, t, visit=visit)))
                dwell = rng.uniform(5, 120)
                if dwell > 20:
                    trig.append((t + 20, store, z, TriggerEvent("dwell", inbox, z, t + 20, 20.0,
                                                                visit)))
                t += dwell
                trig.append((t, store, z, TriggerEvent("exit", inbox, z, t, dwell, visit)))
                t += rng.uniform(2, 30)
    trig.sort(key=lambda x: x[0])
    log: list[tuple[str, str, Decision]] = []
    pending: list[tuple[float, str, str, Decision, int]] = []  # peer charges in flight
    spent: dict[tuple[str, str], int] = defaultdict(int)
    next_grant = WEEK0
    t0 = time.perf_counter()
    for n, (ts, store, zone, te) in enumerate(trig):
        while ts >= next_grant:
            _grant(camps, engines, spent)
            next_grant += 3600
        while pending and pending[0][0] <= ts:
            _, s, g, d, eid = pending.pop(0)
            peer = engines[s, "gw-b" if g == "gw-a" else "gw-a"]
            peer.remote_charge(f"e{eid}", d.trigger.inbox, d.campaign or "", ts=d.trigger.unix_ts,
                               offer=d.reason == "offer")
        g = GW_OF_ZONE[zone]
        d = engines[store, g].decide(te)
        log.append((store, g, d))
        if d.reason in {"offer", "holdout"}:
            pending.append((ts + PEER_LAG_S, store, g, d, n))
            if d.reason == "offer" and camps[d.campaign or ""].budget.kind != "none":
                spent[d.campaign or "", f"{store}/{g}"] += 1
    elapsed = time.perf_counter() - t0
    report = _check(p, camps, log) | {
        "decisions": len(log), "decisions_per_s": round(len(log) / elapsed),
        "shoppers": p.shoppers, "stores": p.stores, "campaigns": p.campaigns}
    for e in engines.values():
        e.flush()
    t1 = time.perf_counter()
    report |= _till_week(p, camps, log, keys=keys, work=Path(tmp.name), rng=rng)
    report["till_s"] = round(time.perf_counter() - t1, 1)
    tmp.cleanup()
    return report


class _AtTill:
    """A shopper at the till: their inbox and the offers this visit brought."""

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox
        self.offers: dict[str, Offer] = {}


def _decision_event(n: int, store: str, g: str, d: Decision) -> Event:
    """The ``decision`` event the gateway's recorder sends for ``d`` (gateway.recorder)."""
    t = d.trigger
    return Event(id=f"s-{n:09d}", kind="decision", ts=t.unix_ts, store=store,
                 gateway=f"{store}/{g}", inbox=t.inbox, zone=t.zone, campaign=d.campaign,
                 variant=d.variant, offer=d.offer.id if d.offer else None, reason=d.reason,
                 holdout=True if d.holdout else None, detail={"trigger": t.kind})


def _till_week(p: SimParams, camps: dict[str, Campaign], log: list[tuple[str, str, Decision]],
               *, keys: RedeemKeys, work: Path, rng: random.Random) -> dict[str, object]:
    """HQ ingests the week's decisions, every visit checks out at its store's till, and
    HQ's lift is read per campaign and pooled; returns the till's and the lift's numbers."""
    db = HqDb(f"sqlite:///{work / 'hq.sqlite'}")
    db.executemany("INSERT INTO campaigns (id, body, status, updated_at) VALUES (?, ?, 'live', 0)",
                   [(c.id, msgspec.json.encode(c).decode()) for c in camps.values()])
    ingest = Ingest(db)
    exposed = [(n, s, g, d) for n, (s, g, d) in enumerate(log) if d.reason in {"offer", "holdout"}]
    for i in range(0, len(exposed), 5_000):
        ingest.store_events([_decision_event(*x) for x in exposed[i:i + 5_000]])
    # visits in order of their last decision: the checkout follows it by a minute;
    # a campaign is promoted at the checkout of the visit that first exposed the shopper
    visits: dict[str, tuple[str, str, float, list[Decision]]] = {}
    seen: set[tuple[str, str]] = set()
    for store, _, d in log:
        t = d.trigger
        v = visits.setdefault(t.visit, (store, t.inbox, 0.0, []))
        visits[t.visit] = (store, t.inbox, max(v[2], t.unix_ts), v[3])
        if d.reason in {"offer", "holdout"} and (t.inbox, d.campaign or "") not in seen:
            seen.add((t.inbox, d.campaign or ""))
            v[3].append(d)
    now = [0.0]
    promoted: list[str] = []
    desk = TillDesk(db, lambda: keys)
    options = TillSimOptions(base_rate=p.base_conv, uplift=p.true_lift, redeem_p=0.6,
                             staples=True)
    members = {inbox: member_of(db, inbox) for _, inbox, _, _ in visits.values()}
    sims = {s: TillSim(DeskTill(desk, ingest, store=s, till=f"till-{s}", clock=lambda: now[0]),
                       [], campaigns=lambda: promoted, members=members,
                       rng=random.Random(rng.random()), options=options, clock=lambda: now[0])
            for s in sorted({v[0] for v in visits.values()})}

    async def checkouts() -> None:
        for store, inbox, last, firsts in sorted(visits.values(), key=lambda v: v[2]):
            shopper = _AtTill(inbox)
            shopper.offers = {d.offer.id: d.offer for d in firsts if d.offer is not None}
            promoted[:] = [d.campaign or "" for d in firsts]
            now[0] = last + 60.0
            await sims[store].checkout(shopper)

    asyncio.run(checkouts())
    treated, control, covered, judged = Arm(), Arm(), 0, 0
    for c in camps.values():
        by_variant, h = arms(db, c.id, c.attribution.window_s,
                             categories=c.attribution.categories)
        treated, control = sum(by_variant.values(), treated), control + h
        overall, _ = campaign_lift(db, c.id, c.attribution)
        if overall.status == "ok" and overall.lift_lo is not None and overall.lift_hi is not None:
            judged += 1
            covered += overall.lift_lo <= p.true_lift <= overall.lift_hi
    lift, lo, hi = newcombe_diff(treated.converted, treated.shoppers, control.converted,
                                 control.shoppers)
    bought = db.one("SELECT count(*), count(DISTINCT txn || store) FROM purchases")
    db.close()
    return _lift_report(p, treated, control, (lift, lo, hi), covered=covered, judged=judged) | {
        "till": {"checkouts": sum(s.stats.checkouts for s in sims.values()),
                 "baskets": bought[1] if bought else 0, "lines": bought[0] if bought else 0,
                 "codes_redeemed": sum(s.stats.redeemed for s in sims.values()),
                 "codes_refused": sum(sum(s.stats.refused.values()) for s in sims.values()),
                 "errors": sum(s.stats.errors for s in sims.values())}}


def _lift_report(p: SimParams, treated: Arm, control: Arm, est: tuple[float, float, float],
                 *, covered: int, judged: int) -> dict[str, object]:
    lift, lo, hi = est
    # calibration: re-plant the same units 200 times; a 95 % interval should cover ~95 %
    g = np.random.default_rng(p.seed)
    n_t, n_c, cover = treated.shoppers, control.shoppers, 0
    for _ in range(200):
        _, lo_r, hi_r = newcombe_diff(int(g.binomial(n_t, p.base_conv + p.true_lift)), n_t,
                                      int(g.binomial(n_c, p.base_conv)), n_c)
        cover += lo_r <= p.true_lift <= hi_r
    return {
        "holdout_units": n_c, "treated_units": n_t,
        "converted_treated": treated.converted, "converted_holdout": control.converted,
        "base_rate": p.base_conv, "true_lift": p.true_lift,
        "lift": round(lift, 4), "lift_ci95": [round(lo, 4), round(hi, 4)],
        "lift_recovered": lo <= p.true_lift <= hi,
        "campaigns_ci_cover_truth": [covered, judged],
        "lift_ci_coverage_200_replants": cover / 200,
    }


def _check(p: SimParams, camps: dict[str, Campaign], log: list[tuple[str, str, Decision]]
           ) -> dict[str, object]:
    clock = LocalClock()
    v_cap: dict[tuple[str, str, str], int] = defaultdict(int)
    c_cap: dict[tuple[str, str], int] = defaultdict(int)
    d_cap: dict[tuple[str, str, str], int] = defaultdict(int)
    all_cap: dict[tuple[str, str], int] = defaultdict(int)
    last: dict[str, float] = {}
    bad: dict[str, int] = defaultdict(int)
    offers_by: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    for store, _, d in log:
        reasons[d.reason] += 1
        if d.reason not in {"offer", "holdout"}:
            continue
        t, c = d.trigger, camps[d.campaign or ""]
        lt = clock.at(TZ, t.unix_ts)
        v_cap[t.inbox, c.id, t.visit] += 1
        c_cap[store + t.inbox, c.id] += 1
        d_cap[store + t.inbox, c.id, lt.date] += 1
        k = c.caps
        bad["cap_per_visit"] += v_cap[t.inbox, c.id, t.visit] > k.per_shopper
        bad["cap_per_campaign"] += k.per_campaign is not None and c_cap[store + t.inbox, c.id] > \
            k.per_campaign
        bad["cap_per_day"] += k.per_day is not None and \
            d_cap[store + t.inbox, c.id, lt.date] > k.per_day
        if d.reason != "offer" or d.offer is None:
            continue
        offers_by[c.id] += 1
        all_cap[t.inbox, t.visit] += 1
        bad["cap_all_campaigns_per_visit"] += k.per_visit_all is not None and \
            all_cap[t.inbox, t.visit] > k.per_visit_all
        bad["cap_min_gap"] += t.unix_ts - last.get(store + t.inbox, -1e18) < k.min_gap_s
        last[store + t.inbox] = t.unix_ts
        s = c.schedule
        bad["outside_schedule"] += not (s.start or 0) <= t.unix_ts < (s.end or 1e18)
        bad["expiry_past_end"] += d.offer.expires_at > (s.end or 1e18)
        bad["quiet_hours"] += bool(k.quiet) and in_windows(
            tuple((sum(1 << x for x in range(1, 8)), None, *w.minutes()) for w in k.quiet), lt)
    over = {cid: offers_by[cid] - c.budget.total for cid, c in camps.items()
            if c.budget.kind != "none" and offers_by[cid] > c.budget.total}
    max_over = {cid: 2 * len(c.stores) for cid, c in camps.items()}
    budgeted = [c for c in camps.values() if c.budget.kind != "none"]
    return {
        "offers": sum(offers_by.values()), "reasons": dict(sorted(reasons.items())),
        "violations": {k: v for k, v in bad.items() if v} or {},
        "budget_campaigns": len(budgeted),
        "budget_spent_of_total": [(offers_by[c.id], c.budget.total) for c in budgeted],
        "budget_overspent": over,
        "budget_overspend_within_bound": all(v <= max_over[c] for c, v in over.items()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shoppers", type=int, default=10_000)
    ap.add_argument("--stores", type=int, default=5)
    ap.add_argument("--campaigns", type=int, default=50)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    print(json.dumps(simulate(SimParams(a.shoppers, a.stores, a.campaigns, seed=a.seed)),
                     indent=1))


if __name__ == "__main__":
    main()
