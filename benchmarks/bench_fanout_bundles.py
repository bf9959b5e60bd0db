"""Full bundles fanned out to a chain (docs/scale.md#full-bundle-fan-out): HQ -> 1,000 stores.

``aislecast bench fanout`` times a small flash delta; this is the other fan-out, the
whole signed bundle of every store, as HQ sends at start (takeover), on a key change and
every refresh round. A chain of 1,000 stores (``AISLECAST_BENCH_FANOUT_STORES``) with
100 home shoppers each (``AISLECAST_BENCH_FANOUT_PER_STORE``; 100,000 shoppers), a
profile per shopper in the model and one live campaign per store. 1,000 MQTT clients
stand in for the gateways (one per store, subscribed to the store's bundle topic as a
gateway is, all in this process: their receiving costs this process's CPU too, so the
times are upper bounds). HQ's real :class:`~hq.service.HqService` builds, signs and
publishes every store's bundle retained; a round ends when every stand-in holds its
store's new bundle (a real gateway's :class:`~aislecast.kernel.verify.Verifier` opens
one of them and checks its version: the positive witness).

Rounds, each timed from the call to the last gateway holding its bundle (and to the
call's return: every bundle built, signed, published and acknowledged by the broker):

- ``cold``: a fresh service (HQ just started: no shopper's key schedule or token
  cached), ``warm``: the same service again (a refresh round);
- subject ``aislecast``: :meth:`HqService.republish_all` (one pass over the shoppers for
  every store's tables, bounded concurrent publishing); subject ``publish_bundle per
  store``: what a round did before, one :meth:`HqService.publish_bundle` after another.

Also: HQ's build+sign time per bundle (no publishing, cold and warm), bytes per bundle
(as received), and one gateway verification.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import Bundle, Campaign, Creative, Store, Trigger, decode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.verify import Verifier
from benchmarks._harness import BenchOptions, Measurement, benchmark, env_count, percentile
from benchmarks.bench_scope import _fill, _model
from hq.db import HqDb
from hq.service import HqService
from hq.shards import BrokerShards

__all__ = ["bench_fanout_bundles"]

_B = "fanout_bundles"
_GOAL_S = 2.0  # issue 11: full bundles to 1,000 stores, to the last gateway


def _sizes(opts: BenchOptions) -> tuple[int, int]:
    hint = "set a whole number of at least 1, or unset it"
    stores = env_count("AISLECAST_BENCH_FANOUT_STORES", 50 if opts.quick else 1_000, minimum=1,
                       what="a count of stores", hint=hint)
    per = env_count("AISLECAST_BENCH_FANOUT_PER_STORE", 20 if opts.quick else 100, minimum=1,
                    what="a count of shoppers", hint=hint)
    return stores, per


class _Gateways:
    """Arrival time per store of the current round (the first bundle message after the
    round started), and the last payload of the first store (for the witness)."""

    def __init__(self, stores: list[str]) -> None:
        self.stores = stores
        self.arrived: dict[str, float] = {}
        self.sizes: list[int] = []
        self.sample: bytes = b""
        self.done = asyncio.Event()
        self.open = False

    def start(self) -> None:
        self.arrived, self.sizes, self.open = {}, [], True
        self.done.clear()

    async def on(self, msg: aiomqtt.Message) -> None:
        m = topics.parse(msg.topic.value)
        store = None if m is None else m.store
        if not self.open or store is None or store in self.arrived:
            return
        self.arrived[store] = time.perf_counter()
        assert isinstance(msg.payload, bytes)
        self.sizes.append(len(msg.payload))
        if store == self.stores[0]:
            self.sample = msg.payload
        if len(self.arrived) == len(self.stores):
            self.open = False
            self.done.set()


def _chain(work: Path, n_stores: int, per: int) -> tuple[HqDb, list[str]]:
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    probe = HqService(db, Signer(load_or_create_signing_key(work / "hq.pem")))
    stores = [f"s{i:04d}" for i in range(n_stores)]
    for s in stores:
        probe.upsert_store(Store(id=s, name=s))
    shoppers = _fill(db, n_stores * per, stores=n_stores, names=stores)
    probe.upsert_campaign(Campaign(id="weekly", name="weekly", stores=stores,
                                   trigger=Trigger(kind="enter", zones=["entrance"]),
                                   creatives=[Creative(id="a", title="Weekly deals")]))
    return db, [i for i, _ in shoppers]


def _build_sign_ms(service: HqService, stores: list[str]) -> float:
    t = time.perf_counter()
    for s in stores:
        service.signer.sign("bundle", service.build_bundle(s))
    return (time.perf_counter() - t) / len(stores) * 1000


async def _round(gws: _Gateways, svc: HqService, stores: list[str],
                 run: Callable[[HqService, list[str]], Awaitable[None]] | None
                 ) -> tuple[float, float, list[float]]:
    gws.start()
    t0 = time.perf_counter()
    if run is None:
        if await svc.republish_all():
            raise RuntimeError("a bundle of the round was not published")
    else:
        await run(svc, stores)
    hq_s = time.perf_counter() - t0  # every bundle built, signed, published and acknowledged
    await asyncio.wait_for(gws.done.wait(), 600)
    return max(gws.arrived.values()) - t0, hq_s, [t - t0 for t in gws.arrived.values()]


async def _sequential(service: HqService, stores: list[str]) -> None:
    for s in stores:
        await service.publish_bundle(s)


@benchmark(_B)
async def bench_fanout_bundles(opts: BenchOptions) -> list[Measurement]:
    n, per = _sizes(opts)
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="aislecast-fanout-bundles-") as tmp:
        work = Path(tmp)
        db, inboxes = await asyncio.to_thread(_chain, work, n, per)
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        model = _model(inboxes)
        mqtt = MqttSettings(port=free_port())
        hq = MqttLink(mqtt, client_id="hq-fanout-bundles")
        link = BrokerShards(hq, {})

        def fresh() -> HqService:  # HQ just started: nothing cached
            svc = HqService(db, signer, link=link)
            svc.model = model
            return svc

        stores = [f"s{i:04d}" for i in range(n)]
        gws = _Gateways(stores)
        extra: dict[str, float | int | str] = {"stores": n, "shoppers": n * per,
                                               "per_store": per, "goal_s": _GOAL_S}
        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=mqtt.port)):
            links = [MqttLink(mqtt, client_id=f"gw-{s}", handler=gws.on, clean_start=True,
                              subscriptions=[(topics.bundle(s), 1)]) for s in stores]
            for i in range(0, n, 100):  # connect in waves, as gateways would over time
                for gw in links[i:i + 100]:
                    await gw.__aenter__()
                await asyncio.gather(*(gw.wait_connected(30) for gw in links[i:i + 100]))
            try:
                async with hq:
                    await hq.wait_connected(10)
                    for subject, run in (("publish_bundle per store", _sequential),
                                         ("aislecast", None)):
                        svc = fresh()
                        for phase in ("cold", "warm"):
                            last, hq_s, lat = await _round(gws, svc, stores, run)
                            rows += [
                                Measurement(_B, subject, f"{phase}: all {n} gateways have their bundle",
                                            last, "s", "lower", extra=extra),
                                Measurement(_B, subject, f"{phase}: HQ done (all acknowledged)",
                                            hq_s, "s", "lower"),
                                Measurement(_B, subject, f"{phase}: per-gateway p50",
                                            percentile(lat, 0.5) * 1000, "ms", "lower"),
                                Measurement(_B, subject, f"{phase}: per-gateway p99",
                                            percentile(lat, 0.99) * 1000, "ms", "lower"),
                            ]
                            version = decode(Verifier(signer.public_raw).open(gws.sample, "bundle"),
                                             Bundle).version
                            held = db.one("SELECT bundle_version FROM stores WHERE id = ?",
                                          (stores[0],))
                            if held is None or version != held[0]:
                                raise RuntimeError(f"store {stores[0]} holds bundle {version}, "
                                                   "not the round's")
            finally:
                for gw in links:
                    await gw.__aexit__(None, None, None)
        sizes = gws.sizes
        sample = gws.sample
        probe = stores[:min(n, 100)]
        cold_ms = _build_sign_ms(fresh(), probe)  # a fresh service: key schedules made
        warm_svc = fresh()
        _build_sign_ms(warm_svc, probe)
        warm_ms = _build_sign_ms(warm_svc, probe)
        db.close()
    verifier = Verifier(signer.public_raw)
    t = time.perf_counter()
    for _ in range(50):
        verifier.open(sample, "bundle")
    verify_ms = (time.perf_counter() - t) / 50 * 1000
    return [
        *rows,
        Measurement(_B, "aislecast", "HQ build+sign one bundle, cold", cold_ms, "ms", "lower",
                    extra={"stores_timed": len(probe)}),
        Measurement(_B, "aislecast", "HQ build+sign one bundle, warm", warm_ms, "ms", "lower",
                    extra={"stores_timed": len(probe)}),
        Measurement(_B, "aislecast", "bytes per bundle (as received)", sum(sizes) / len(sizes),
                    "bytes", "lower", extra={"per_store": per}),
        Measurement(_B, "aislecast", "gateway verify one bundle", verify_ms, "ms", "lower"),
    ]
