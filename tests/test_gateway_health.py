"""`aislecast gateway health` reads the retained state report and judges it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttLink
from aislecast.kernel.schema import SCHEMA_VERSION, GatewayState
from gateway.config import load_config
from gateway.health import verdict
from tests.harness import STORE, enter_campaign, stack, until


async def _health(cfg_path: Path) -> tuple[int, dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aislecast", "gateway", "health", "--config", str(cfg_path),
        "--json", "--timeout", "5", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), json.loads(out)


def _toml(cfg: dict[str, object]) -> str:
    broker = cfg["broker"]
    assert isinstance(broker, dict)
    return (f'gateway = "{cfg["gateway"]}"\nstore = "{cfg["store"]}"\n'
            f'hq_public_key = "{cfg["data_dir"]}/hq.pub"\ndata_dir = "{cfg["data_dir"]}"\n'
            f'health_every_s = 1.0\n[broker]\nport = {broker["port"]}\n')


async def test_health_of_a_running_then_stopped_gateway(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")]) as st:
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        cfg = st.gateway_config()
        Path(str(cfg["data_dir"]), "hq.pub").write_text(str(cfg["hq_public_key"]))
        path = tmp_path / "gw.toml"
        path.write_text(_toml(cfg))
        # wait for a periodic report with the bundle applied, as the broker retains it
        reports: list[dict[str, object]] = []

        async def on_state(msg: aiomqtt.Message) -> None:
            reports.append(json.loads(bytes(msg.payload)))  # type: ignore[arg-type]

        async with MqttLink(st.mqtt, client_id="test-health-watch", handler=on_state,
                            subscriptions=[(topics.gateway_state(STORE, "gw-1"), 1)]):
            await until(lambda: any(r.get("status") == "online"
                                    and isinstance(v := r.get("bundle_version"), int) and v >= 1
                                    for r in reports), timeout=15)
        code, report = await _health(path)
        assert code == 0, report
        state = report["state"]
        assert isinstance(state, dict)
        assert state["status"] == "online"
        assert state["bundle_version"] >= 1
        await st.stop_gateway(gw)
        code, report = await _health(path)
        assert code == 1
        assert "offline" in str(report["verdict"])


def test_verdicts_name_what_to_do(tmp_path: Path) -> None:
    cfg = load_config({"gateway": "g", "store": "s", "hq_public_key": "k", "health_every_s": 10.0})
    ok = GatewayState(v=SCHEMA_VERSION, gateway="g", store="s", status="online", version="x",
                      bundle_version=3, metrics={"bundle_version": 3}, ts=1000.0)
    assert verdict(ok, cfg, 1005.0).code == 0
    assert verdict(None, cfg, 1005.0).code == 2
    assert "old" in verdict(ok, cfg, 1100.0).reason
    denied = GatewayState(v=1, gateway="g", store="s", status="online", version="x",
                          metrics={"bundle_version": 3, "publisher_denied": 2}, ts=1000.0)
    assert "credentials" in verdict(denied, cfg, 1001.0).reason
