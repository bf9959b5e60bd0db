"""``aislecast bench kill``: SIGKILL the gateway under load, again and again, then audit.

Real processes on one machine: a private Mosquitto, ``aislecast hq serve`` on SQLite,
and ``aislecast gateway run`` with the simulated scanner, while simulated phones
(:mod:`benchmarks.bench_kill_load`) walk the store and report the beacons they hear, so
the gateway decides and offers all the time. Each cycle starts the gateway, lets it run
a random while (sometimes not even until it is ready), SIGKILLs it and, while it is
down, reads its SQLite file as the next start will (:mod:`benchmarks.bench_kill_stack`).
An *aimed* cycle (every ``aim_every``-th) instead runs until an offer it decided reaches
a shopper still standing in that zone and is killed right then. While the gateway is
down the shoppers stand still, each until a restarted gateway has decided for them
again (:meth:`benchmarks.bench_kill_load.Phones.hold`). After the last cycle the
gateway runs until every shopper held at the last kill was decided again and its
outbox is empty, and stops cleanly.

The audit, from what HQ stored, what crossed the broker and the outbox snapshots:

* **events lost**: events the gateway committed (seen in an outbox snapshot or in a
  batch on the broker) that HQ does not have, plus offers a phone received whose
  ``decision`` event HQ does not have, plus offers HQ has a decision for that no phone
  received; rows still in the outbox after the clean stop are not lost (they go at
  the next start) and are reported apart;
* **duplicates**: an offer published twice as two ``offer_published`` events or two
  decisions; a phone receiving the same offer id twice (MQTT QoS 1 is at least once:
  a kill between the PUBACK and its commit republishes) is reported apart;
* **cap violations**: offers beyond the first to one shopper for one campaign, all of
  which are capped at ``per_campaign = 1``, counted over every offer id seen anywhere;
* **integrity**: ``PRAGMA integrity_check`` of the gateway's file after every kill and
  at the end, and of HQ's.

Witnesses that the kills hit work in progress: offers decided within a second before
a kill, and shoppers offered something within a second before a kill who were
decided for the same campaign again after the restart and refused by the cap. With
aimed cycles both are certain, however slow the machine: an aimed kill follows an
offer, its shopper is held in that zone until the restarted gateway decides for them,
and that decision is a refusal by the cap (or, were the charge lost, a cap violation).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import cancel_until_done
from aislecast.kernel.signing import public_key_pem
from benchmarks._harness import BenchOptions, Measurement, benchmark
from benchmarks._hq import hq_serve, publish_bundle, seed_hq
from benchmarks.bench_kill_load import Phones, Wire
from benchmarks.bench_kill_stack import (
    GATEWAY,
    STORE,
    GatewayProcess,
    OutboxSnapshot,
    integrity,
    kill_campaigns,
)

__all__ = ["KillPlan", "KillReport", "bench_kill", "run_kill"]

_READY_WITHIN_S = 90.0  # a gateway start on a loaded 2-core machine, bundle applied
_AIM_WITHIN_S = 90.0  # guards, not limits: the next offer, the held shoppers' decisions
_DRAIN_WITHIN_S = 120.0
_NEAR_S = 1.0  # "around a kill": decided at most this long before it
_CAP_REFUSALS = frozenset({"cap_per_campaign", "cap_per_visit"})


@dataclass(frozen=True, slots=True)
class KillPlan:
    cycles: int = 100
    shoppers: int = 3000  # enrolled; the phones cycle through them
    active: int = 120  # walking at once
    dwell_s: tuple[float, float] = (1.5, 3.5)  # a shopper's stay in each zone
    up_s: tuple[float, float] = (0.3, 2.5)  # how long the gateway runs after it is ready
    early: float = 0.15  # share of kills during start-up, before it is ready
    aim_every: int = 0  # every n-th cycle is aimed (0: none): killed right after an offer
    seed: int = 14
    progress_every: int = 10


@dataclass(slots=True)
class _Cycle:
    started: float
    ready: float | None = None
    killed: float = 0.0


@dataclass(slots=True)
class KillReport:
    cycles: int = 0
    lost: int = 0
    duplicates: int = 0
    cap_violations: int = 0
    integrity: str = "ok"
    offers: int = 0  # offer decisions HQ stored
    offers_near_kill: int = 0
    rechecked_after_restart: int = 0  # crash-window shoppers the cap refused after restart
    redelivered: int = 0  # offer ids a phone received more than once
    left_in_outbox: int = 0
    events_at_hq: int = 0
    early_kills: int = 0
    aimed_kills: int = 0
    seconds: float = 0.0
    detail: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Seen:
    """Every committed thing the bench saw, whichever way it saw it."""

    events: set[str] = field(default_factory=set)
    offers: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (inbox, campaign)
    integrity: list[str] = field(default_factory=list)

    def add(self, snap: OutboxSnapshot) -> None:
        self.events |= snap.events
        self.offers |= snap.offers
        self.integrity.append(snap.integrity)


def _hq_rows(path: Path) -> list[tuple[str, str, str | None, str | None, str | None,
                                       str | None, float]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT id, kind, inbox, campaign, offer, reason, ts FROM events WHERE gateway = ?",
            (GATEWAY,)).fetchall()
    finally:
        conn.close()


def _audit(rep: KillReport, hq_db: Path, *, seen: _Seen, wire: Wire, final: OutboxSnapshot,
           cycles: list[_Cycle]) -> None:
    rows = _hq_rows(hq_db)
    at_hq = {r[0] for r in rows}
    rep.events_at_hq = len(at_hq)
    decisions = [r for r in rows if r[1] == "decision"]
    decided = {r[4]: (r[2], r[3], r[6]) for r in decisions if r[5] == "offer" and r[4]}
    # lost: committed but not at HQ (the final outbox goes out at the next start)
    known = seen.events | wire.events
    missing = known - at_hq - final.events
    unlogged = set(wire.offers) - set(decided)
    undelivered = set(decided) - set(wire.offers) - set(final.offers)
    rep.lost = len(missing) + len(unlogged) + len(undelivered)
    rep.left_in_outbox = len(final.events) + len(final.offers)
    # duplicates: one offer, two decisions or two offer_published events
    per_offer = Counter((r[1], r[4]) for r in rows if r[4] and r[1] in {"decision", "offer_published"})
    rep.duplicates = sum(n - 1 for n in per_offer.values() if n > 1)
    rep.redelivered = sum(1 for n in wire.deliveries.values() if n > 1)
    # cap violations over every offer id seen anywhere
    pair_of = {oid: (i, c) for oid, (i, c, _) in decided.items() if i and c}
    pair_of |= wire.offers | seen.offers | final.offers
    per_pair = Counter(pair_of.values())
    rep.cap_violations = sum(n - 1 for n in per_pair.values() if n > 1)
    rep.offers = len(decided)
    # witnesses
    kills = [c.killed for c in cycles]
    near: set[tuple[str, str]] = set()
    for i, c, ts in decided.values():
        if i and c and any(0 <= k - ts <= _NEAR_S for k in kills):
            rep.offers_near_kill += 1
            near.add((i, c))
    refused_after = {(r[2], r[3]) for r in decisions if r[5] in _CAP_REFUSALS and any(
        k < r[6] for k in kills)}
    rep.rechecked_after_restart = len(near & refused_after)
    problems = [s for s in (*seen.integrity, final.integrity, integrity(hq_db)) if s != "ok"]
    rep.integrity = "ok" if not problems else "; ".join(sorted(set(problems)))[:500]
    rep.detail = {"committed_events_missing_at_hq": len(missing),
                  "offers_received_without_decision": len(unlogged),
                  "offers_decided_never_received": len(undelivered),
                  "events_seen_on_the_wire": len(wire.events),
                  "events_seen_in_snapshots": len(seen.events),
                  "offers_received": len(wire.offers)}


async def _cycle(n: int, *, gw: GatewayProcess, wire: Wire, phones: Phones, plan: KillPlan,
                 rng: random.Random, rep: KillReport) -> tuple[_Cycle, OutboxSnapshot]:
    c = _Cycle(started=time.time())
    aimed = plan.aim_every > 0 and n % plan.aim_every == 0
    await gw.start()
    if not aimed and rng.random() < plan.early:
        rep.early_kills += 1
        await asyncio.sleep(rng.uniform(0.1, 1.5))
    else:
        if not await wire.until_state(since=c.started, timeout=_READY_WITHIN_S):
            raise RuntimeError(f"the gateway was not ready within {_READY_WITHIN_S:.0f} s; "
                               + gw.failure())
        c.ready = time.time()
        if not aimed:
            await asyncio.sleep(rng.uniform(*plan.up_s))
        elif not await wire.until_offer(decided_since=c.started, standing=phones.standing,
                                        timeout=_AIM_WITHIN_S):
            raise RuntimeError(f"aimed cycle {n}: no offer to a shopper standing in its zone"
                               f" within {_AIM_WITHIN_S:.0f} s; " + gw.failure())
        else:
            rep.aimed_kills += 1
    if not gw.running:
        raise RuntimeError(gw.failure())
    c.killed = time.time()
    phones.hold(c.killed)  # no await since the offer: its shopper is still in the zone
    return c, await gw.kill()


async def run_kill(plan: KillPlan, *, progress: bool = True) -> KillReport:
    """Run ``plan.cycles`` kill cycles under load and audit them."""
    rng = random.Random(plan.seed)
    rep = KillReport()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aislecast-kill-") as tmp:
        work = Path(tmp)
        hq = await asyncio.to_thread(seed_hq, work, STORE, kill_campaigns(), plan.shoppers,
                                     admin="kill-admin")
        port = free_port()
        seen, wire, cycles = _Seen(), Wire(), []
        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=port)), \
                hq_serve(work, ["--broker", f"127.0.0.1:{port}"]) as http, asyncio.TaskGroup() as tg:
            subscribed = asyncio.Event()
            wire_task = tg.create_task(wire.run(port, subscribed), name="kill-wire")
            await subscribed.wait()
            await asyncio.to_thread(publish_bundle, http, STORE, hq.admin_token)
            phones = Phones(hq.shoppers, active=plan.active, rng=rng, dwell_s=plan.dwell_s,
                            decided=wire.decided)
            phones_task = tg.create_task(phones.run(port), name="kill-phones")
            gw = GatewayProcess(work, port, public_key_pem(hq.signer.public_key))
            for n in range(1, plan.cycles + 1):
                c, snap = await _cycle(n, gw=gw, wire=wire, phones=phones, plan=plan, rng=rng,
                                       rep=rep)
                cycles.append(c)
                seen.add(snap)
                if progress and (n % plan.progress_every == 0 or n == plan.cycles):
                    print(f"[bench] kill {n}/{plan.cycles} cycles, {time.perf_counter() - t0:.0f} s:"
                          f" offers on the wire {len(wire.offers)}, integrity"
                          f" {'ok' if all(s == 'ok' for s in seen.integrity) else 'FAILED'}",
                          file=sys.stderr, flush=True)
            start = time.time()
            await gw.start()
            if not await wire.until_state(since=start, timeout=_READY_WITHIN_S):
                raise RuntimeError("the last start was not ready; " + gw.failure())
            try:  # the shoppers held at the last kill re-trigger before they go home
                async with asyncio.timeout(_AIM_WITHIN_S):
                    await phones.released.wait()
            except TimeoutError:
                raise RuntimeError(f"{phones.held} shoppers held since the last kill were not"
                                   f" decided again within {_AIM_WITHIN_S:.0f} s; "
                                   + gw.failure()) from None
            await cancel_until_done(phones_task)  # one cancel can be lost (aiomqtt, 3.11)
            quiet = time.time() + 3.0  # after the shoppers' exits (absence_s = 2 s)
            await asyncio.sleep(3.0)
            if not await wire.until_state(since=quiet, timeout=_DRAIN_WITHIN_S, outbox_empty=True):
                print("[bench] kill: the outbox did not drain; auditing what there is",
                      file=sys.stderr)
            final = await gw.stop()
            await asyncio.sleep(1.0)  # the wire sees the last batches HQ already acked
            await cancel_until_done(wire_task)
            rep.cycles = len(cycles)
        _audit(rep, work / "hq.sqlite", seen=seen, wire=wire, final=final, cycles=cycles)
    rep.seconds = time.perf_counter() - t0
    return rep


def _rows(rep: KillReport) -> list[Measurement]:
    note: dict[str, float | int | str] = {
        "cycles": rep.cycles, "early_kills": rep.early_kills, "aimed_kills": rep.aimed_kills,
        "offers": rep.offers,
        "offers_within_1s_before_a_kill": rep.offers_near_kill,
        "crash_window_shoppers_refused_by_the_cap_after_restart": rep.rechecked_after_restart,
        "integrity": rep.integrity, "offers_redelivered_same_id": rep.redelivered,
        "left_in_outbox_at_clean_stop": rep.left_in_outbox, "events_at_hq": rep.events_at_hq,
        "seconds": round(rep.seconds, 1), **rep.detail}

    def row(metric: str, value: float, unit: str) -> Measurement:
        return Measurement("kill", "aislecast", metric, value, unit, "lower", extra=note)

    return [
        row("events lost", rep.lost, "events"),
        row("duplicates", rep.duplicates, "events"),
        row("cap violations", rep.cap_violations, "offers"),
        row("integrity_check failures", 0 if rep.integrity == "ok" else 1, "files"),
        Measurement("kill", "aislecast", "SIGKILL cycles", rep.cycles, "", "higher", extra=note),
        Measurement("kill", "aislecast", "offers within 1 s before a kill", rep.offers_near_kill,
                    "", "higher", extra=note),
    ]


@benchmark("kill")
async def bench_kill(opts: BenchOptions) -> list[Measurement]:
    plan = KillPlan(cycles=5, shoppers=400, active=60, progress_every=1) if opts.quick \
        else KillPlan()
    return _rows(await run_kill(plan))
