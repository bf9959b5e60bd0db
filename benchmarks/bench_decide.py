"""Decision engine throughput and latency with 1,000 live campaigns (goal: >= 20,000
decisions/s and p99 < 1 ms on one core).

Campaigns are spread over 20 zones and the trigger kinds, with priorities, weekly
windows in the store's time zone, quiet hours, caps, budgets, holdouts, audiences and
three creative variants each, plus a trained-looking model; 10,000 shoppers trigger on a
clock advancing 50 ms per decision. SQLite is a real file in WAL mode, as on a gateway.

The second measurement is the gateway's whole decision path on the same campaigns:
presence events into :class:`~gateway.parts.GatewayParts` (visit, decision, ``decision``
event, offer, cap charges and budget spend, one group commit per ``batch`` events as
one event-loop turn makes), decisions and offers committed per second.

    python -m benchmarks.bench_decide            # or: aislecast bench decide
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from aislecast.kernel.campaign import (
    FEATURES,
    ArmStats,
    Audience,
    Budget,
    Campaign,
    Caps,
    Creative,
    Model,
    Profile,
    Schedule,
    Trigger,
    Window,
)
from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.schema import SCHEMA_VERSION, Bundle, Store, Zone
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from benchmarks._harness import BenchOptions, Measurement, benchmark
from gateway.config import load_config
from gateway.decisions import DecisionEngine, TriggerEvent
from gateway.parts import GatewayParts
from gateway.presence import PresenceEvent
from gateway.storage import open_db

__all__ = ["bench_decide", "make_campaigns"]

ZONES = [f"z{i}" for i in range(20)]
_SYNC_EVERY = 1_000  # events between visit syncs on the gateway path (~1 s of them)
KINDS = ["enter", "dwell", "exit", "tap"]


def make_campaigns(n: int, rng: random.Random, store: str = "s1") -> list[Campaign]:
    out = []
    for i in range(n):
        kind = rng.choice(KINDS)
        out.append(Campaign(
            id=f"c{i}", name=f"c{i}", stores=[store], scenario=rng.choice(["location", "planned"]),
            trigger=Trigger(kind=kind, zones=rng.sample(ZONES, k=rng.randint(1, 2)),
                            min_dwell_s=10.0 if kind == "dwell" else 0.0),
            creatives=[Creative(id=v, title=v, format=rng.choice(["banner", "landing"]))
                       for v in "abc"],
            schedule=Schedule(windows=[Window("07:00", "22:00")] if rng.random() < 0.5 else []),
            caps=Caps(per_shopper=1, per_day=2, per_visit_all=3, min_gap_s=30.0,
                      quiet=[Window("22:30", "23:00")]),
            budget=Budget("impressions", 10_000) if rng.random() < 0.3 else Budget(),
            audience=Audience(segments=["s1"]) if rng.random() < 0.1 else Audience(),
            priority=rng.randint(0, 9), holdout_pct=10.0,
        ))
    return out


def _model(rng: random.Random, campaigns: list[Campaign], shoppers: int) -> Model:
    return Model(weights=[rng.uniform(-1, 1) for _ in FEATURES],
                 profiles={f"i{k}": Profile(segments=["s1"], lead=rng.random(), visits=3)
                           for k in range(0, shoppers, 3)},
                 arms={f"{c.id}/{v.id}": ArmStats(rng.randint(1, 30), rng.randint(1, 300))
                       for c in campaigns for v in c.creatives})


def run(n_campaigns: int, n_decisions: int, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    shoppers = 10_000
    camps = make_campaigns(n_campaigns, rng)
    with tempfile.TemporaryDirectory() as d:
        db = open_db(Path(d) / "gw.sqlite")
        e = DecisionEngine(db, "s1", gateway="gw-1", rng=random.Random(seed))
        e.load(camps, [], tz="Europe/Berlin", zones=ZONES, model=_model(rng, camps, shoppers))
        t0 = 1_750_000_000.0  # a Sunday afternoon UTC
        trig = [TriggerEvent(rng.choice(KINDS), f"i{rng.randrange(shoppers)}", rng.choice(ZONES),
                             t0 + k * 0.05, dwell_s=rng.uniform(0, 60),
                             visit=f"v{k // 20_000}", tag=None)
                for k in range(n_decisions)]
        lat = []
        pc = time.perf_counter_ns
        offers = 0
        start = pc()
        for t in trig:
            a = pc()
            offers += e.decide(t).offer is not None
            lat.append(pc() - a)
        total = (pc() - start) / 1e9
        db.close()
    lat.sort()
    return {"decisions_per_s": n_decisions / total, "p50_us": lat[len(lat) // 2] / 1e3,
            "p99_us": lat[int(len(lat) * 0.99)] / 1e3, "offers": offers,
            "offer_rate": offers / n_decisions}


def run_gateway_path(n_campaigns: int, n_events: int, *, batch: int = 8,
                     seed: int = 1) -> dict[str, float]:
    """Presence events through the gateway's parts, ``batch`` per group commit."""
    rng = random.Random(seed)
    shoppers = 10_000
    camps = make_campaigns(n_campaigns, rng)
    kinds: list[str] = ["enter", "dwell", "exit"]
    with tempfile.TemporaryDirectory() as d:
        signer = Signer(load_or_create_signing_key(Path(d) / "hq.pem"))
        cfg = load_config({"gateway": "gw-1", "store": "s1", "data_dir": str(Path(d) / "gw"),
                           "hq_public_key": public_key_pem(signer.public_key),
                           "scanner": {"backend": "sim"}})
        parts = GatewayParts.open(cfg, notify=lambda kind, data: None, on_bundle=lambda: None)
        now = time.time()
        parts.apply_bundle(Bundle(
            v=SCHEMA_VERSION, version=1, store=Store(id="s1", name="s1", tz="Europe/Berlin"),
            issued_at=now, expires_at=now + 86_400, zones=[Zone(id=z, name=z) for z in ZONES],
            beacons=[], campaigns=camps, rotation_k=TOKEN_ROTATION_K, token_tables=[],
            model=_model(rng, camps, shoppers)))
        evs = [PresenceEvent(rng.choice(kinds), f"i{rng.randrange(shoppers)}",  # type: ignore[arg-type]
                             rng.choice(ZONES), 0.0, dwell_s=rng.uniform(0, 60))
               for _ in range(n_events)]
        start = time.perf_counter()
        for i in range(0, n_events, batch):
            parts.triggers.presence_events(evs[i:i + batch])  # no loop: commits at once
            if i % _SYNC_EVERY < batch:  # the ticker's visit sync, about once a second
                parts.visits.sync(time.time(), parts.presence.present(), force=True)
        total = time.perf_counter() - start
        offers = parts.recorder.stats.offers
        parts.close()
    return {"decisions_per_s": n_events / total, "offers_per_s": offers / total,
            "offer_rate": offers / n_events}


@benchmark("decide")
async def bench_decide(opts: BenchOptions) -> list[Measurement]:
    n = 5_000 if opts.quick else 100_000
    r = await asyncio.to_thread(run, 1_000, n)
    g = await asyncio.to_thread(run_gateway_path, 1_000, n // 5)
    extra: dict[str, float | int | str] = {"campaigns": 1_000, "decisions": n,
                                           "offer_rate": round(r["offer_rate"], 3)}
    return [
        Measurement("decide", "aislecast", "decisions_per_s", round(r["decisions_per_s"]),
                    "1/s", "higher", extra),
        Measurement("decide", "aislecast", "p99_decision", round(r["p99_us"], 1), "us", "lower",
                    extra),
        Measurement("decide", "aislecast", "p50_decision", round(r["p50_us"], 1), "us", "lower",
                    extra),
        Measurement("decide", "aislecast", "gateway path, decisions committed/s",
                    round(g["decisions_per_s"]), "1/s", "higher",
                    {"campaigns": 1_000, "events": n // 5, "per_commit": 8,
                     "offer_rate": round(g["offer_rate"], 3)}),
        Measurement("decide", "aislecast", "gateway path, offers committed/s",
                    round(g["offers_per_s"]), "1/s", "higher",
                    {"campaigns": 1_000, "events": n // 5, "per_commit": 8}),
    ]


if __name__ == "__main__":
    print(run(1_000, 100_000))
    print(run_gateway_path(1_000, 20_000))
