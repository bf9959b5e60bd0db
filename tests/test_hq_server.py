"""HQ's composition root: ``async with HqServer(...)`` lifecycle, the inbound router, and
``/metrics`` exposing every counter of every component from its one stats object."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.counters import metric_names
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, BatchAck, Event, EventBatch, decode, encode
from hq.metrics import NAMESPACE
from hq.server import HqServer
from tests.harness import bearer, token_for, until


def _server(broker: MosquittoProcess, work: Path, **kw: object) -> HqServer:
    return HqServer(db_url=f"sqlite:///{work}/db/hq.sqlite", key_path=work / "keys" / "hq.pem",
                    mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0,
                    **kw)  # type: ignore[arg-type]


async def test_nothing_touches_the_disk_before_entry_and_everything_stops_after(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    hq = _server(broker, tmp_path)
    assert not (tmp_path / "db").exists() and not (tmp_path / "keys").exists()
    with pytest.raises(RuntimeError, match="inside 'async with"):
        _ = hq.service
    async with hq:
        assert (tmp_path / "db" / "hq.sqlite").exists() and (tmp_path / "keys" / "hq.pem").exists()
        assert hq.started.is_set() and hq.link.connected.is_set() and hq.http_port > 0
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert {"hq-http", "hq-ingest", "hq-acks", "hq-republisher"} <= names
        assert "hq-learner" not in names  # learn_every_s=0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}") as c:
            assert (await c.get("/health")).json()["mqtt"] is True
    assert not hq.started.is_set()
    left = {t.get_name() for t in asyncio.all_tasks()}
    assert not left & {"hq-http", "hq-ingest", "hq-acks", "hq-republisher", "hq-ack"}
    with pytest.raises(httpx.ConnectError):  # the HTTP socket is closed
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}") as c:
            await c.get("/health")
    with pytest.raises(RuntimeError, match="entered once"):
        async with hq:
            pass


async def test_cancelled_run_stops_cleanly(broker: MosquittoProcess, tmp_path: Path) -> None:
    """What SIGTERM does to ``aislecast hq serve``: the task running ``run()`` is cancelled."""
    hq = _server(broker, tmp_path)
    task = asyncio.create_task(hq.run())
    async with asyncio.timeout(15):
        await hq.started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
    assert not {t.get_name() for t in asyncio.all_tasks()} & {"hq-http", "hq-ingest"}


async def test_two_servers_in_one_process_keep_their_own_counters(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _server(broker, tmp_path / "a", client_id="hq-a") as a, \
            _server(broker, tmp_path / "b", client_id="hq-b") as b:
        a.ingest.store_events([Event(id="e1", kind="zone_enter", ts=1.0, store="s1")])
        assert a.metrics.snapshot()["ingest"]["events_ingested"] == 1
        assert b.metrics.snapshot()["ingest"]["events_ingested"] == 0
        assert a.metrics.registry is not b.metrics.registry


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_expose_every_counter_of_every_component(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _server(broker, tmp_path) as hq, MqttLink(
            MqttSettings(port=broker.port), client_id="gw-test", clean_start=True,
            subscriptions=[(topics.gateway_acks("s1", "g1"), 1)]) as gw:
        acks: list[BatchAck] = []

        async def on(msg: aiomqtt.Message) -> None:
            assert isinstance(msg.payload, bytes)
            acks.append(decode(msg.payload, BatchAck))

        gw._handler = on  # a bare link: the test reads the ack the router's reply became
        await gw.wait_connected(10)
        batch = EventBatch(v=SCHEMA_VERSION, store="s1", gateway="g1", batch="b1", events=[
            Event(id=f"e{i}", kind="zone_enter", ts=time.time(), store="s1", gateway="g1")
            for i in range(3)])
        await gw.publish(topics.gateway_events("s1", "g1"), encode(batch))
        await gw.publish(topics.gateway_events("s1", "g1"), b"not json")
        await until(lambda: acks)
        assert (acks[0].batch, acks[0].stored) == ("b1", 3)
        await until(lambda: hq.ingest.stats.bad_payloads.get("events") == 1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}",
                                     headers=bearer(token_for(hq.db, "admin"))) as c:
            assert (await c.get("/api/campaigns/nope")).status_code == 404
            assert (await c.get("/no/such/page")).status_code == 404
            res = await c.get("/metrics")
            as_json = (await c.get("/api/metrics")).json()
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    fams = _families(res.text)
    # every field of every component's stats, labelled or not (an empty labelled counter
    # has no sample yet), is declared in the exposition; prometheus-client spells counter
    # TYPE lines with or without `_total` depending on its version
    declared = {line.split()[2].removesuffix("_total") for line in res.text.splitlines()
                if line.startswith("# TYPE ")}
    for source, stats in hq.metrics.sources.items():
        assert dataclasses.is_dataclass(stats)
        for name in metric_names(NAMESPACE, source, stats):
            assert name.removesuffix("_total") in declared, name
    for source in ("ingest", "router", "acks", "service", "console", "shortlinks", "learning",
                   "republisher", "mqtt", "http"):
        assert source in hq.metrics.sources
    # ... and the numbers are the ones the components counted
    assert fams[f"{NAMESPACE}_ingest_events_ingested_total"][()] == 3
    assert fams[f"{NAMESPACE}_ingest_bad_payloads_total"][(("kind", "events"),)] == 1
    assert fams[f"{NAMESPACE}_router_messages_total"][(("route", "events"),)] == 2
    assert fams[f"{NAMESPACE}_acks_sent_total"][()] >= 1
    http = fams[f"{NAMESPACE}_http_requests_total"]
    assert http[(("method", "GET"), ("route", "/api/campaigns/{cid}"), ("status", "404"))] == 1
    assert http[(("method", "GET"), ("route", "<unrouted>"), ("status", "404"))] == 1
    assert fams[f"{NAMESPACE}_http_refusals_total"][(("status", "404"),)] == 2
    # the JSON view reads the same objects
    assert as_json["ingest"]["events_ingested"] == 3
    assert as_json["ingest"]["bad_payloads"] == {"events": 1}
