"""Fan-out at chain scale on one machine (docs/architecture.md#past-one-machine): HQ -> 1,000 store gateways.

1,000 MQTT clients stand in for the gateways of 1,000 stores (one per store, each
subscribed to its store's bundle and delta topics exactly as a gateway is). HQ's real
service signs and publishes a flash delta to every store; we measure, per gateway, the
time from HQ starting the fan-out to that gateway holding its signed delta, and how long
HQ takes to sign and publish all of them. A real gateway verifies the signature too:
that is timed separately on one envelope.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.procinfo import rss_mib
from aislecast.kernel.schema import Campaign, Creative, Store, Trigger
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.verify import Verifier
from benchmarks._harness import BenchOptions, Measurement, benchmark, mean_ms, percentile
from hq.db import HqDb
from hq.service import HqService
from hq.shards import BrokerShards

__all__ = ["bench_fanout"]


@benchmark("fanout")
async def bench_fanout(opts: BenchOptions) -> list[Measurement]:
    n = 100 if opts.quick else 1000
    with tempfile.TemporaryDirectory(prefix="aislecast-fanout-") as tmp:
        work = Path(tmp)
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        mqtt = MqttSettings(port=free_port())
        hq = MqttLink(mqtt, client_id="hq-fanout")
        service = HqService(HqDb(f"sqlite:///{work}/hq.sqlite"), signer,
                            link=BrokerShards(hq, {}))
        stores = [f"s{i:04d}" for i in range(n)]
        for s in stores:
            service.upsert_store(Store(id=s, name=s))
        port = mqtt.port
        arrived: dict[str, float] = {}
        done = asyncio.Event()

        async def on(msg: aiomqtt.Message) -> None:
            m = topics.parse(msg.topic.value)
            store = m.store if m is not None else None
            if store is not None and store not in arrived:
                arrived[store] = time.perf_counter()
                if len(arrived) == n:
                    done.set()

        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=port)) as broker:
            links = [MqttLink(mqtt, client_id=f"gw-{s}", handler=on, clean_start=True,
                              subscriptions=[(topics.bundle_delta(s), 1), (topics.bundle(s), 1)])
                     for s in stores]
            t_conn = time.perf_counter()
            for i in range(0, n, 100):  # connect in waves, as gateways would over time
                for link in links[i:i + 100]:
                    await link.__aenter__()
                await asyncio.gather(*(link.wait_connected(30) for link in links[i:i + 100]))
            connect_s = time.perf_counter() - t_conn
            async with hq:
                await hq.wait_connected(10)
                flash = Campaign(id="news", name="breaking", stores=stores,
                                 trigger=Trigger(kind="flash"),
                                 creatives=[Creative(id="a", title="Match day: 2 for 1")])
                t0 = time.perf_counter()
                await asyncio.gather(*(service.publish_delta(s, campaigns=[flash]) for s in stores))
                published_s = time.perf_counter() - t0
                await asyncio.wait_for(done.wait(), 120)
            rss = rss_mib(broker.pid) if broker.pid is not None else None
            for link in links:
                await link.__aexit__(None, None, None)
    lat = [arrived[s] - t0 for s in stores]
    envelope = signer.sign("delta", service.build_bundle(stores[0]))
    verifier = Verifier(signer.public_raw)
    verify_ms = mean_ms(lambda: verifier.open(envelope, "delta"), 200)
    return [
        Measurement("fanout", "aislecast", f"all {n} gateways have the flash delta", max(lat) * 1000,
                    "ms", "lower"),
        Measurement("fanout", "aislecast", "per-gateway p50", percentile(lat, 0.5) * 1000, "ms",
                    "lower"),
        Measurement("fanout", "aislecast", "per-gateway p99", percentile(lat, 0.99) * 1000, "ms",
                    "lower"),
        Measurement("fanout", "aislecast", f"HQ sign+publish {n} deltas", published_s * 1000, "ms",
                    "lower"),
        Measurement("fanout", "aislecast", "gateway verify one delta", verify_ms, "ms", "lower"),
        Measurement("fanout", "aislecast", f"{n} gateway connections", connect_s, "s", "lower"),
        Measurement("fanout", "mosquitto", f"broker RSS with {n} gateways", rss or float("nan"), "MiB",
                    "lower"),
    ]

