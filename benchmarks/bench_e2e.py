"""End to end: advert injected at the gateway -> offer received through Mosquitto.

The path measured is the product's: advert -> prefilter -> token resolution -> presence
(zone enter) -> decision -> offer committed to the SQLite outbox -> QoS 1 publish with
message expiry -> Mosquitto -> a subscriber. HQ runs as its own process (``aislecast hq
serve``) ingesting the gateway's event batches; the "phones" are ``mosquitto_sub``
(C, separate process) subscribed to every inbox, timestamping each offer on receipt.

Rows: p50/p99 at a steady 200 offers/s with 2,000 shoppers, then a rate sweep up to the
highest rate whose p99 stays within twice the 200/s p99 while keeping up; beside it, raw
aiomqtt QoS 1 publishing on the same broker (one at a time, and 64 in flight) as the
ceiling any MQTT client here can reach. All of it twice in the same run: plain MQTT
(anonymous, loopback), then the product's TLS layout ("TLS" rows: the gateway over
mutual TLS, HQ and the phones over TLS with passwords, password file + ACL + CRL on the
broker), and how much of the within-20 ms saturation rate TLS costs (goal: <= 25 %).
A full run interleaves two rounds (plain, TLS, plain, TLS) and keeps each transport's
better one; ``--quick`` runs one round.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from aislecast.kernel import topics
from aislecast.kernel.acl import GatewayAccount, acl_rules, gateway_username, hq_username
from aislecast.kernel.broker import AclRule, BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.privatefile import write_private
from aislecast.kernel.procinfo import rss_mib
from aislecast.kernel.schema import Campaign, Creative, Trigger
from aislecast.kernel.signing import Signer, public_key_pem
from aislecast.kernel.tokens import eid_for
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile, stop_process
from benchmarks._hq import hq_serve, publish_bundle, seed_hq
from edge.advert import Advertisement
from edge.frames import encode_eddystone_eid
from edge.scanner import AdvertCallback
from edge.simstore import default_zones
from gateway.app import Gateway
from gateway.config import load_config
from hq.broker_auth import BrokerAuthFiles, hash_password, new_password
from hq.gateway_certs import issue_gateway_cert
from hq.local_broker import tls_broker_config

__all__ = ["bench_e2e"]

_P99_GOAL_MS = 20.0  # the issue's latency goal at a given load

STORE = "store-bench"
_GATEWAY = "gw-bench"
_READY = "bench/ready"
_ZONES = [z.id for z in default_zones()]


class _NullScanner:
    """The bench injects adverts itself; this backend only satisfies the interface."""

    name = "bench"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def stats(self) -> dict[str, float | int | str | None]:
        return {"backend": self.name}


@dataclass
class _Shopper:
    inbox: str
    service_uuid: str
    frame: bytes
    address: str
    zone_i: int = 0


@dataclass
class _Receipts:
    sent_at: dict[str, float] = field(default_factory=dict)  # inbox -> injection wall time
    latencies: list[float] = field(default_factory=list)
    received: int = 0


def _campaigns() -> list[Campaign]:
    return [Campaign(id=f"bench-{zone}", name=zone, stores=[STORE],
                     trigger=Trigger(kind="enter", zones=[zone]), validity_s=600,
                     creatives=[Creative(id="a", title=f"{zone} deal", format="coupon",
                                         coupon_code="B1")]) for zone in _ZONES]


@dataclass(frozen=True, slots=True)
class _Transport:
    """One way of wiring the same stack: ``plain`` (anonymous MQTT on loopback, the
    baseline) or ``tls``, the product's layout (hq.local_broker): the gateway over mutual
    TLS with a certificate from HQ's CA, HQ and the phones over TLS with passwords, the
    broker checking the password file, the ACL and the CRL."""

    name: str
    prefix: str  # before each metric: "" (plain keeps its historical names) or "TLS "
    work: Path  # this transport's own files (broker, gateway data, certificates)
    broker: BrokerConfig
    hq_args: list[str]
    gw_broker: dict[str, object]
    sub_args: list[str]


def _plain(work: Path) -> _Transport:
    port = free_port()
    return _Transport("plain", "", work, BrokerConfig(directory=work / "broker", port=port),
                      ["--broker", f"127.0.0.1:{port}"], {"port": port},
                      ["-h", "127.0.0.1", "-p", str(port)])


def _tls(work: Path) -> _Transport:
    """Blocking (keys, files): call it in a thread."""
    gw_user, hq_user, phones = gateway_username(STORE, _GATEWAY), hq_username(), "bench-phones"
    passwords = {hq_user: new_password(), phones: new_password()}
    files = BrokerAuthFiles(work / "auth")
    files.write({u: hash_password(p) for u, p in passwords.items()},
                [*acl_rules([GatewayAccount(STORE, _GATEWAY)], [hq_user]),
                 AclRule("read", topics.offers("+"), phones),
                 AclRule("readwrite", _READY, phones), AclRule("write", _READY, gw_user)])
    layout = tls_broker_config(work / "broker", files, work / "ca")
    ca = str(layout.ca.cert_path)
    gw = issue_gateway_cert(layout.ca, gw_user, work / "gw-certs")
    secret = work / "hq.secret"
    write_private(secret, passwords[hq_user] + "\n")
    hq_toml = work / "hq.toml"
    hq_toml.write_text(f'data_dir = "{work / "hq-data"}"\n[broker]\nport = {layout.phone_port}\n'
                       f'username = "{hq_user}"\npassword_file = "{secret}"\ntls_ca = "{ca}"\n')
    return _Transport(
        "tls", "TLS ", work, layout.config, ["--config", str(hq_toml)],
        {"port": layout.gateway_port, "tls_ca": str(gw.ca), "tls_cert": str(gw.cert),
         "tls_key": str(gw.key)},
        ["-h", "127.0.0.1", "-p", str(layout.phone_port), "--cafile", ca, "-u", phones,
         "-P", passwords[phones]])


async def _subscriber(connect: list[str], rec: _Receipts, ready: asyncio.Event) -> None:
    binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
    proc = await asyncio.create_subprocess_exec(
        binary, *connect, "-q", "1", "-i", "bench-phones",
        "-t", topics.offers("+"), "-t", _READY, "-F", "%U %t",
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            ts_s, _, topic = line.decode().strip().partition(" ")
            if topic == _READY:
                ready.set()
                continue
            m = topics.parse(topic)
            inbox = m.inbox if m is not None and m.kind is topics.Kind.OFFERS else None
            sent = rec.sent_at.pop(inbox, None) if inbox else None
            rec.received += 1
            if sent is not None:
                rec.latencies.append(float(ts_s) - sent)
    finally:
        # 2 s: blocked writing to the pipe nobody reads any more (a backlog of offers
        # after an overloaded sweep), it never gets to act on SIGTERM (seen as a hung bench)
        await stop_process(proc, 2)


async def _drive(gw: Gateway, shoppers: list[_Shopper], rec: _Receipts, rate: float,
                 seconds: float) -> tuple[float, list[float]]:
    """Inject zone changes at ``rate`` per second; returns (achieved rate, latencies)."""
    rec.latencies = []
    start_received = rec.received
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    i = 0
    while (elapsed := loop.time() - t0) < seconds:
        # inject exactly rate x elapsed so far, whatever the sleep granularity
        while i < int(rate * elapsed):
            s = shoppers[i % len(shoppers)]
            i += 1
            s.zone_i = (s.zone_i + 1) % len(_ZONES)
            rec.sent_at[s.inbox] = time.time()
            gw.on_advert(Advertisement(s.address, -48, time.monotonic(), f"sim-{_ZONES[s.zone_i]}",
                                       service_data={s.service_uuid: s.frame}))
        await asyncio.sleep(0.002)
    await asyncio.sleep(1.5)  # drain
    got = rec.received - start_received
    return got / seconds, sorted(rec.latencies)


async def _raw_aiomqtt(port: int, n: int, inflight: int) -> float:
    async with MqttLink(MqttSettings(port=port), client_id=f"raw-{inflight}", clean_start=True) as link:
        await link.wait_connected(10)
        sem = asyncio.Semaphore(inflight)

        async def one(j: int) -> None:
            async with sem:
                await link.publish(f"bench/raw/{j % 100}", b"x" * 300, qos=1)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(j) for j in range(n)))
        return n / (time.perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class _Setup:
    """What both transports' runs share: HQ's database and key, the shoppers."""

    work: Path
    shoppers: list[_Shopper]
    base_n: int
    token: str
    signer: Signer
    quick: bool


async def _run(t: _Transport, setup: _Setup) -> tuple[list[Measurement], float]:
    """The scripted run on one transport: its rows and its within-goal saturation rate."""
    work, shoppers, base_n, token, signer, quick = (
        setup.work, setup.shoppers, setup.base_n, setup.token, setup.signer, setup.quick)
    rows: list[Measurement] = []
    # no retraining mid-run (--learn-every 0): the second transport's HQ would otherwise
    # start by learning from the first one's events, on the cores the measured path needs
    async with MosquittoProcess(t.broker), hq_serve(work, t.hq_args,
                                                    extra=["--learn-every", "0"]) as http:
        await asyncio.to_thread(publish_bundle, http, STORE, token)
        cfg = await asyncio.to_thread(load_config, {
            "gateway": _GATEWAY, "store": STORE, "data_dir": str(t.work / "gw"),
            "hq_public_key": public_key_pem(signer.public_key), "broker": t.gw_broker,
            "scanner": {"backend": "sim", "receivers": {f"sim-{z}": z for z in _ZONES}},
            # a shopper not heard for 0.4 s has left: every revisit is a fresh zone entry
            "presence": {"absence_s": 0.4, "dwell_every_s": 3600.0},
        })

        def null(_: AdvertCallback) -> _NullScanner:
            return _NullScanner()

        gw = Gateway(cfg, null)
        rec = _Receipts()
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            sub = tg.create_task(_subscriber(t.sub_args, rec, ready), name="bench-phones")
            gw_task = tg.create_task(gw.run(), name="bench-gateway")
            await asyncio.wait_for(gw.ready.wait(), 30)
            await gw.link.wait_connected(10)
            while not ready.is_set():
                await gw.link.publish(_READY, b"1", qos=1)
                await asyncio.sleep(0.1)
            rate, lat = await _drive(gw, shoppers[:base_n], rec, 200, 1 if quick else 10)
            p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
            rows += [
                Measurement("e2e", "aislecast", f"{t.prefix}p50 @200/s", p50, "ms", "lower"),
                Measurement("e2e", "aislecast", f"{t.prefix}p99 @200/s", p99, "ms", "lower",
                            extra={"offers": len(lat), "achieved_per_s": round(rate, 1)}),
            ]
            # 200/s counts as within the goal only if it was (a loaded machine can miss it)
            met = rate >= 0.95 * 200 and p99 <= _P99_GOAL_MS
            doubling, within_goal, doubled = 200.0, 200.0 if met else 0.0, False
            pool = shoppers[base_n:]
            for target in ([600.0] if quick else [500.0, 1000, 1500, 2000, 2500, 3000, 4000]):
                rate, lat = await _drive(gw, pool, rec, target, 1 if quick else 4)
                q99 = percentile(lat, 0.99) * 1000
                print(f"[bench] e2e {t.name} {target:.0f}/s -> {rate:.0f}/s p99 {q99:.1f} ms",
                      file=sys.stderr)
                rows.append(Measurement("e2e", "aislecast", f"{t.prefix}p99 @{target:.0f}/s", q99,
                                        "ms", "lower", extra={"achieved_per_s": round(rate, 1)}))
                keeps_up = rate >= 0.95 * target
                if keeps_up and q99 <= 2 * p99 and not doubled:
                    doubling = target
                else:
                    doubled = True
                if not met or not keeps_up or q99 > _P99_GOAL_MS:
                    break
                within_goal = target
            rows.append(Measurement("e2e", "aislecast",
                                    f"{t.prefix}saturation rate (p99 <= 2x p99@200/s)",
                                    doubling, "offers/s"))
            rows.append(Measurement("e2e", "aislecast", f"{t.prefix}saturation rate", within_goal,
                                    "offers/s", extra={"rule": "keeps up, p99 < 20 ms"}))
            if not t.prefix:
                rows.append(Measurement("e2e", "aislecast", "bench process RSS (gateway)",
                                        rss_mib() or float("nan"), "MiB", "lower"))
            print(f"[bench] gateway metrics ({t.name}) {gw.metrics()}", file=sys.stderr)
            gw_task.cancel()
            sub.cancel()
        if t.name == "plain":
            for inflight in (1, 64):
                r = await _raw_aiomqtt(t.broker.port, 500 if quick else 5000, inflight)
                rows.append(Measurement("e2e", f"aiomqtt raw x{inflight}", "saturation rate", r,
                                        "msgs/s", extra={"note": "publish only, no outbox"}))
    return rows, within_goal


@benchmark("e2e")
async def bench_e2e(opts: BenchOptions) -> list[Measurement]:
    """Plain and TLS in the same run, on the same machine, HQ database and shoppers."""
    quick = opts.quick
    base_n, sweep_n = (200, 400) if quick else (2000, 6000)
    k = TOKEN_ROTATION_K  # HQ's default; the resolver tolerates one epoch of rotation
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-") as tmp:
        work = Path(tmp)
        seeded = await asyncio.to_thread(seed_hq, work, STORE, _campaigns(), base_n + sweep_n,
                                         admin="bench-admin", rotation_k=k)
        enrolled, signer, token = seeded.shoppers, seeded.signer, seeded.admin_token
        now = time.time()
        shoppers = []
        for j, (inbox, key) in enumerate(enrolled):
            uuid, frame = encode_eddystone_eid(eid_for(key, now, k), -59)
            addr = f"5A:00:00:{j >> 16:02X}:{(j >> 8) & 255:02X}:{j & 255:02X}"
            shoppers.append(_Shopper(inbox, uuid, frame, addr))
        setup = _Setup(work, shoppers, base_n, token, signer, quick)
        # interleaved rounds, each transport's best (lowest p99 at 200/s) kept: on a shared
        # machine one round's numbers swing several-fold with the neighbours' load
        best: dict[str, tuple[list[Measurement], float]] = {}
        for i in range(1 if quick else 2):
            for name, make in (("plain", _plain), ("tls", _tls)):
                t = await asyncio.to_thread(make, work / f"{name}-{i}")
                got = await _run(t, setup)
                if name not in best or got[0][1].value < best[name][0][1].value:
                    best[name] = got
    (plain_rows, plain_sat), (tls_rows, tls_sat) = best["plain"], best["tls"]
    if plain_sat == 0:  # plain missed the goal at 200/s already: no rate to compare against
        print("[bench] e2e: plain missed p99 < 20 ms at 200/s; no TLS saturation loss", file=sys.stderr)
        return plain_rows + tls_rows
    loss = 100 * max(0.0, 1 - tls_sat / plain_sat)
    return plain_rows + tls_rows + [
        Measurement("e2e", "aislecast", "TLS saturation loss vs plain", loss, "%", "lower",
                    extra={"goal": "<= 25 %", "rounds": 1 if quick else 2})]
