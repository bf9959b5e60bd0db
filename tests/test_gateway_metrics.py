"""One metrics source per component: every counter a component keeps is in the Prometheus
exposition (scraped over HTTP), in the retained state report (HQ's console) and in the
local one (`aislecast gateway health`), under the same name."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttLink
from aislecast.kernel.schema import GatewayState, decode
from edge.sim_scanner import SimScanner
from gateway.app import Gateway
from gateway.config import load_config
from gateway.health import observe
from gateway.metrics import NAMESPACE
from gateway.report import LocalReport
from tests.harness import STORE, enter_campaign, stack, until

# settings, not counters: attributes of the components that are not metrics
_CONFIG = {"max_rows", "unheard_after_s", "low_battery_mv", "absence_s", "max_down_s", "sync_s",
           "idle_s", "by_uid", "by_ibeacon"}  # (the last two: the fleet's lookup tables)


def _is_counter(v: object) -> bool:
    if isinstance(v, dict):  # a labelled family: numbers by reason (not a lookup table)
        return all(isinstance(x, int | float) for x in v.values())
    return isinstance(v, int | float)


async def _scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def _counters(prefix: str, stats: object) -> set[str]:
    """What a component keeps, found by looking at it (not at the metrics module)."""
    if dataclasses.is_dataclass(stats):
        keys = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    elif isinstance(stats, dict):
        keys = stats
    else:
        keys = {k: v for k, v in vars(stats).items() if not k.startswith("_") and k not in _CONFIG}
    return {f"{prefix}_{k}" if prefix else k for k, v in keys.items()
            if _is_counter(v) and not k.endswith("_monotonic")}


def _component_counters(gw: Gateway) -> set[str]:
    p = gw.parts
    return (_counters("", p.counters) | _counters("triggers", p.triggers.stats)
            | _counters("recorder", p.recorder.stats) | _counters("publisher", p.publisher.stats)
            | _counters("pool", p.pool.stats) | _counters("mqtt", gw.link.stats)
            | _counters("taps", p.taps.stats) | _counters("scanner", gw.scanner.stats())
            | _counters("outbox", p.outbox) | _counters("bundle", p.bundles)
            | _counters("presence", p.presence) | _counters("fleet", p.fleet)
            | _counters("visits", p.visits) | _counters("schedule", p.schedule))


async def test_every_component_counter_is_exposed_and_reported(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("entrance")]) as st:
        await st.hq.service.publish_bundle(STORE)
        cfg = load_config(st.gateway_config())
        gw = Gateway(cfg, lambda cb: SimScanner(st.sim, cb), metrics_port=0)
        async with gw:
            await asyncio.wait_for(gw.ready.wait(), 10)
            await until(lambda: gw.parts.counters.adverts_decoded > 0)  # it is working
            assert gw.metrics_server is not None
            text = await _scrape(gw.metrics_server.port)
            families = {f.name: f for f in text_string_to_metric_families(text)}
            exposed = {n.removeprefix(f"{NAMESPACE}_") for n in families}
            kept = _component_counters(gw)
            assert len(kept) >= 50  # the introspection found them (59 today)
            assert kept - exposed == set()  # nothing dropped
            assert families[f"{NAMESPACE}_adverts_decoded"].type == "counter"
            assert families[f"{NAMESPACE}_outbox_rows"].type == "gauge"
            decoded = families[f"{NAMESPACE}_adverts_decoded"].samples[0].value
            assert decoded > 0  # the scrape read live values
            assert families[f"{NAMESPACE}_bundle_version"].samples[0].value >= 1
            local = await asyncio.to_thread(observe, cfg)  # as `gateway health` reads it
            assert isinstance(local, LocalReport)
            assert kept - set(local.state.metrics) == set()
            retained: list[GatewayState] = []

            async def on_state(msg: aiomqtt.Message) -> None:
                assert isinstance(msg.payload, bytes)
                retained.append(decode(msg.payload, GatewayState))

            async with MqttLink(st.mqtt, client_id="test-metrics-watch", handler=on_state,
                                subscriptions=[(topics.gateway_state(STORE, cfg.gateway), 1)]):
                await until(lambda: any(r.metrics for r in retained))
            assert kept - set(next(r for r in retained if r.metrics).metrics) == set()


async def test_a_gateway_is_entered_once(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, []) as st:
        cfg = load_config(st.gateway_config())
        gw = Gateway(cfg, lambda cb: SimScanner(st.sim, cb))
        with pytest.raises(RuntimeError, match="async with"):
            _ = gw.parts  # nothing is opened before entry
        async with gw:
            assert len(gw.parts.outbox) == 0  # the database was opened by __aenter__
        with pytest.raises(RuntimeError, match="entered once"):
            async with gw:
                pass
