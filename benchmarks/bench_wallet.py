"""Publish -> offer visible in the web wallet: the real browser path, on loopback.

Debian's chromium (Playwright) runs the wallet page from HQ's ``/wallet``, enrolled
through the page, connected to the product's TLS broker layout
(:func:`hq.local_broker.tls_broker_config`) on its secure WebSockets listener with the
wallet's own MQTT.js. Offers are published on the shopper's offers topic at QoS 1 with
message expiry, as a gateway's outbox publishes them (here from HQ's broker link, which
the ACL lets publish offers too, so no gateway's scanning and deciding is in the
number); ``issued_at`` is the moment just before the publish.

* ``publish_to_page_p50``/``p99``: ``issued_at`` -> the offer's card is in the page's
  DOM (the wallet's own ``Date.now()`` at render, same machine clock), in ms, over
  offers spaced at random 20-80 ms (goal p99 < 100 ms on loopback). Every offer must
  arrive: ``missing`` counts those that did not within 10 s. Each offer is valid 3 s,
  so a few dozen are on show at a time.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aislecast.apps.scenarios import setup_store
from aislecast.kernel import topics
from aislecast.kernel.acl import acl_rules
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, Offer, encode
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from benchmarks.wallet_browser import chromium_args, enrol, wallet_browser
from edge.simstore import STORE_UUID, default_zones
from hq.broker_auth import BrokerAuthFiles
from hq.local_broker import tls_broker_config
from hq.server import HqServer

__all__ = ["bench_wallet"]

_STORE = "store-bench"
#: Offers leave the page at expiry: a few dozen on show at a time, as a shopper might
#: have, not hundreds (the page's work grows with the cards it shows).
_VALID_S = 3.0


def _offer(inbox: str, n: int) -> Offer:
    now = time.time()
    return Offer(v=SCHEMA_VERSION, id=uuid.uuid4().hex, campaign=f"bench-{n}", variant="a",
                 store=_STORE, inbox=inbox, issued_at=now, expires_at=now + _VALID_S,
                 title=f"Offer {n}", countdown=True)


async def _run(work: Path, opts: BenchOptions) -> list[Measurement]:
    files = BrokerAuthFiles(work / "broker-auth")
    await asyncio.to_thread(files.write, {}, acl_rules([], []))
    tls = await asyncio.to_thread(tls_broker_config, work / "mosquitto", files, work / "ca")
    n = 40 if opts.quick else 400
    async with MosquittoProcess(tls.config) as broker:
        mqtt = MqttSettings(port=tls.phone_port, tls_ca=str(tls.ca.cert_path))
        async with HqServer(db_url=f"sqlite:///{work}/hq.sqlite", key_path=work / "hq.pem",
                            mqtt=mqtt, http_port=0, broker_auth_dir=files.directory,
                            broker_pid=lambda: broker.pid,
                            wallet_broker_url=f"wss://localhost:{tls.browser_port}/mqtt") as hq:
            setup_store(hq.service, _STORE, default_zones(), STORE_UUID)
            base = f"http://127.0.0.1:{hq.http_port}"
            args = chromium_args(tls.config.tls.certfile) if tls.config.tls else []
            async with wallet_browser(work / "profile", args) as page:
                me = await enrol(page, base, stores=[_STORE])
                lat, missing = await _publish(hq, page, me["inbox"], n)
    extra: dict[str, float | int | str] = {
        "offers": n, "missing": missing,
        "path": "MQTT publish (QoS 1) -> mosquitto -> wss -> MQTT.js in chromium -> wallet DOM"}
    return [
        Measurement("wallet", "aislecast", "publish_to_page_p50", percentile(lat, 0.5), "ms",
                    "lower", extra),
        Measurement("wallet", "aislecast", "publish_to_page_p99", percentile(lat, 0.99), "ms",
                    "lower", dict(extra)),
    ]


async def _publish(hq: HqServer, page: Any, inbox: str, n: int) -> tuple[list[float], int]:
    rng = random.Random(7)
    for i in range(n):
        o = _offer(inbox, i)
        await hq.link.publish(topics.offers(inbox), encode(o), qos=1)
        await asyncio.sleep(rng.uniform(0.02, 0.08))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = int(await page.evaluate("aislecastWallet.stats.offers_shown"))
        if shown >= n:
            break
        await asyncio.sleep(0.1)
    lat = [float(x) for x in await page.evaluate("aislecastWallet.stats.latencies_ms")]
    return lat, n - len(lat)


@benchmark("wallet")
async def bench_wallet(opts: BenchOptions) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-wallet-") as tmp:
        return await _run(Path(tmp), opts)
