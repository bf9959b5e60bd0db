"""Tap to offer, end to end: an emulated phone taps the gateway's NFC reader, the offer
arrives on that phone's MQTT client through a private Mosquitto.

The whole production path runs: nfcpy udp driver -> NfcReader thread -> TapRouter ->
IdentityResolver -> DecisionEngine -> SQLite outbox -> MQTT QoS 1 -> Phone (which also
sends its ``delivered`` feedback to HQ, and HQ ingests every event batch), all in this one
process on the machine's cores, so the numbers include that contention.

* latency: card enters the field (emulator timestamp) -> offer in the phone's handler,
  p50/p99 over taps arriving at random moments (goal p99 < 100 ms);
* sustained: 2,000 back-to-back taps (quick: 50) from several phones, taps/s from the
  first presentation to the last offer, with failures = taps that produced no offer
  plus reader read failures (goal >= 200/s with zero failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path

from aislecast.apps.phone import Phone, PhoneBehaviour
from aislecast.apps.scenarios import setup_store
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import Campaign, Caps, Creative, Offer, Trigger
from aislecast.kernel.signing import public_key_pem
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from edge.nfc import AISLECAST_AID
from edge.nfc.emulator import CardEmulator, IsoDepCard, free_udp_port
from edge.sim_scanner import SimScanner
from edge.simstore import STORE_UUID, SimStore, default_zones
from gateway.app import Gateway
from gateway.config import load_config
from hq.consent import PURPOSES
from hq.server import HqServer

__all__ = ["bench_tap_e2e"]

_STORE = "store-bench"
_PHONES = 4
_POLL_S = 0.02  # the gateway's default NFC poll interval (edge/nfc/_const.py)
_FAILURES = ("read_failed", "no_ndef", "bad_ndef", "bad_record", "aid_not_found", "bad_token")


class _Run:
    """Presentation i is phone i % N; offers per phone arrive in order (QoS 1, one client)."""

    def __init__(self, phones: list[Phone], n: int) -> None:
        self.phones = phones  # filled by the caller as the clients connect
        self.received: list[list[float]] = [[] for _ in range(n)]
        self.want = 0
        self.all_in = asyncio.Event()

    def on_offer(self, k: int) -> object:
        def record(_: Offer) -> None:
            self.received[k].append(time.monotonic())
            if self.total() >= self.want:
                self.all_in.set()

        return record

    def card(self, emu_ref: list[CardEmulator]) -> IsoDepCard:
        n = len(self.phones)

        def token() -> bytes:  # the phone whose turn this presentation is
            return self.phones[(len(emu_ref[0].presented_at) - 1) % n].token()

        return IsoDepCard(token=token, aid=AISLECAST_AID)

    def total(self) -> int:
        return sum(len(r) for r in self.received)

    async def taps(self, port: int, n: int, gap: tuple[float, float]) -> tuple[list[float], float, int]:
        """Present ``n`` taps; return latencies (ms), wall seconds, taps without an offer."""
        base = [len(r) for r in self.received]
        self.want = self.total() + n
        self.all_in.clear()
        emu_ref: list[CardEmulator] = []
        lo, hi = gap
        emu = CardEmulator(port, self.card(emu_ref), presentations=n,
                           gap_s=lambda: random.uniform(lo, hi))
        emu_ref.append(emu)
        with emu:
            await asyncio.to_thread(emu.wait_sessions, n, 30.0 + n * 0.05)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self.all_in.wait()
        lat: list[float] = []
        last = 0.0
        for i, t0 in enumerate(emu.presented_at):
            k, j = i % len(self.phones), base[i % len(self.phones)] + i // len(self.phones)
            if j < len(self.received[k]):
                lat.append((self.received[k][j] - t0) * 1000)
                last = max(last, self.received[k][j])
        wall = last - emu.presented_at[0] if emu.presented_at and last else float("nan")
        return lat, wall, n - (self.total() - sum(base))


async def _stack(work: Path, opts: BenchOptions) -> list[Measurement]:
    broker = MosquittoProcess(BrokerConfig(directory=work / "mosquitto", port=free_port()))
    async with broker:
        mqtt = MqttSettings(port=broker.port)
        async with HqServer(db_url=f"sqlite:///{work}/hq.sqlite", key_path=work / "hq.pem",
                            mqtt=mqtt, http_port=0) as hq, asyncio.TaskGroup() as tg:
            setup_store(hq.service, _STORE, default_zones(), STORE_UUID)
            hq.service.upsert_campaign(Campaign(
                id="till-tap", name="till tap", stores=[_STORE], trigger=Trigger(kind="tap"),
                creatives=[Creative(id="a", title="Thanks for tapping")], validity_s=600,
                caps=Caps(per_shopper=10**9)))
            enrolled = [hq.service.enroll(list(PURPOSES), [_STORE]) for _ in range(_PHONES)]
            await hq.service.publish_bundle(_STORE)
            port = free_udp_port()
            cfg = load_config({
                "gateway": "gw-1", "store": _STORE, "data_dir": str(work / "gw"),
                "hq_public_key": public_key_pem(hq.service.signer.public_key),
                "broker": {"port": broker.port}, "scanner": {"backend": "sim"},
                "nfc": {"device": f"udp:127.0.0.1:{port}", "zone": "checkout",
                        "poll_interval": _POLL_S, "repeat_holdoff_s": 0.0},
            })
            gw = Gateway(cfg, lambda cb: SimScanner(SimStore(default_zones()), cb))
            gw_task = tg.create_task(gw.run(), name="bench-gateway")
            await gw.ready.wait()
            async with contextlib.AsyncExitStack() as stack:
                phones: list[Phone] = []
                run = _Run(phones, _PHONES)
                for k, e in enumerate(enrolled):
                    p = Phone(mqtt, inbox=e.inbox, identity_key=bytes.fromhex(e.identity_key),
                              rotation_k=e.rotation_k, behaviour=PhoneBehaviour(open_p=0.0),
                              on_offer=run.on_offer(k))  # type: ignore[arg-type]
                    phones.append(await stack.enter_async_context(p))
                await asyncio.gather(*(p.link.wait_connected(10) for p in phones))
                n_lat = 30 if opts.quick else 300
                lat, _, lat_fail = await run.taps(port, n_lat, (0.005, 0.04))
                n_tp = 50 if opts.quick else 2000
                _, wall, tp_fail = await run.taps(port, n_tp, (0.0, 0.0))
                reader = gw.parts.taps.reader
                read_fail = 0
                if reader is not None:
                    read_fail = sum(int(v) for k, v in reader.stats().items()
                                    if k in _FAILURES and isinstance(v, int))
            gw_task.cancel()
    extra: dict[str, float | int | str] = {
        "taps": n_lat, "failures": lat_fail, "phones": _PHONES, "poll_interval_ms": _POLL_S * 1000,
        "path": "nfcpy udp -> reader -> decide -> outbox -> mosquitto -> phone"}
    return [
        Measurement("tap", "aislecast", "tap_to_offer_p50", percentile(lat, 0.5), "ms", "lower", extra),
        Measurement("tap", "aislecast", "tap_to_offer_p99", percentile(lat, 0.99), "ms", "lower",
                    dict(extra)),
        Measurement("tap", "aislecast", "taps_to_offers_per_s", n_tp / wall if wall > 0 else 0.0,
                    "taps/s", "higher",
                    {"taps": n_tp, "failures": tp_fail, "read_failures": read_fail,
                     "wall_s": round(wall, 3), "phones": _PHONES}),
    ]


@benchmark("tap")
async def bench_tap_e2e(opts: BenchOptions) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-tap-") as tmp:
        return await _stack(Path(tmp), opts)
