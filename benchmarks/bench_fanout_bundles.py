"""Full bundles fanned out to a chain (docs/scale.md#full-bundle-fan-out): HQ -> 1,000 stores.

``aislecast bench fanout`` times a small flash delta; this is the other fan-out, the
whole signed bundle of every store, as HQ sends at start (takeover), on a key change and
every refresh round. A chain of 1,000 stores (``AISLECAST_BENCH_FANOUT_STORES``) with
100 home shoppers each (``AISLECAST_BENCH_FANOUT_PER_STORE``; 100,000 shoppers), a
profile per shopper in the model and one live campaign per store. 1,000 MQTT clients
stand in for the gateways (one per store, subscribed to the store's bundle topic as a
gateway is), in a child process (:mod:`benchmarks.fanout_gateways`): real gateways are
other machines, so this process measures HQ and the broker, not the stand-ins'
receiving (on a machine of 2 cores they still share the CPU with HQ and Mosquitto, so
the times are upper bounds). HQ's real :class:`~hq.service.HqService` builds, signs and
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
import base64
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import Bundle, Campaign, Creative, Store, Trigger, decode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.verify import Verifier
from benchmarks._harness import BenchOptions, Measurement, benchmark, env_count, mean_ms, percentile
from benchmarks.bench_scope import _fill, _model
from benchmarks.fanout_gateways import MARK
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
    """The stand-ins' process (:mod:`benchmarks.fanout_gateways`), as the rounds use it;
    ``sizes`` and ``sample``: the last round's."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.sizes: list[int] = []
        self.sample: bytes = b""

    @classmethod
    async def start(cls, port: int, stores: list[str]) -> _Gateways:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.fanout_gateways", str(port), *stores,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)
        gws = cls(proc)
        try:
            await gws.expect("ready", 300)
        except BaseException:
            await gws.close()
            raise
        return gws

    async def _answer(self) -> str:
        assert self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            if line.startswith(MARK):
                return line[len(MARK):].strip()
        raise RuntimeError(f"the stand-in gateways exited ({await self.proc.wait()})")

    async def expect(self, word: str, timeout: float) -> None:
        if (got := await asyncio.wait_for(self._answer(), timeout)) != word:
            raise RuntimeError(f"the stand-in gateways answered {got[:80]!r}, not {word!r}")

    async def arm(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"arm\n")
        await self.proc.stdin.drain()
        await self.expect("armed", 60)

    async def arrivals(self) -> list[float]:
        """When each stand-in held its bundle of the armed round (time.monotonic)."""
        got = json.loads(await asyncio.wait_for(self._answer(), 600))
        self.sizes, self.sample = got["sizes"], base64.b64decode(got["sample"])
        return [float(t) for t in got["arrived"].values()]

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


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
    await gws.arm()
    t0 = time.monotonic()  # the stand-ins' clock too (one machine)
    if run is None:
        if await svc.republish_all():
            raise RuntimeError("a bundle of the round was not published")
    else:
        await run(svc, stores)
    hq_s = time.monotonic() - t0  # every bundle built, signed, published and acknowledged
    lat = [t - t0 for t in await gws.arrivals()]
    return max(lat), hq_s, lat


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
        extra: dict[str, float | int | str] = {"stores": n, "shoppers": n * per,
                                               "per_store": per, "goal_s": _GOAL_S}
        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=mqtt.port)):
            gws = await _Gateways.start(mqtt.port, stores)
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
                await gws.close()
        sizes = gws.sizes
        sample = gws.sample
        probe = stores[:min(n, 100)]
        cold_ms = _build_sign_ms(fresh(), probe)  # a fresh service: key schedules made
        warm_svc = fresh()
        _build_sign_ms(warm_svc, probe)
        warm_ms = _build_sign_ms(warm_svc, probe)
        db.close()
    verifier = Verifier(signer.public_raw)
    verify_ms = mean_ms(lambda: verifier.open(sample, "bundle"), 50)
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
