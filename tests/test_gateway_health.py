"""`aislecast gateway health` reads the retained state report and judges it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttLink
from aislecast.kernel.schema import SCHEMA_VERSION, GatewayState, encode
from gateway.config import load_config
from gateway.health import BUNDLE_GRACE_S, HEALTHY, NO_REPORT, UNHEALTHY, WARNING, Observed, verdict
from tests.harness import STORE, authenticated_broker, enter_campaign, stack, until


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
            f'health_every_s = 1.0\n[broker]\nport = {broker["port"]}\n[scanner]\nbackend = "sim"\n')


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


CFG = load_config({"gateway": "g", "store": "s", "hq_public_key": "k", "health_every_s": 10.0,
                   "scanner": {"backend": "bluez", "silent_after_s": 30.0}})
WORKING = {"bundle_version": 3.0, "scanner_last_advert_age_s": 0.2, "uptime_s": 500.0,
           "connected_s": 400.0}


def _state(**metrics: float) -> GatewayState:
    m = {k: v for k, v in (WORKING | metrics).items() if v >= 0}  # -1: absent (None)
    return GatewayState(v=SCHEMA_VERSION, gateway="g", store="s", status="online", version="x",
                        bundle_version=int(m.get("bundle_version", 0)), metrics=m, ts=1000.0)


def test_verdicts_name_what_to_do() -> None:
    assert verdict(Observed(_state()), CFG, 1005.0).code == HEALTHY
    assert verdict(Observed(None), CFG, 1005.0).code == NO_REPORT
    assert "old" in verdict(Observed(_state()), CFG, 1100.0).reason
    assert "credentials" in verdict(Observed(_state(publisher_denied=2)), CFG, 1001.0).reason
    refused = verdict(Observed(None, refused="[code:134] Bad user name or password"), CFG, 1001.0)
    assert refused.code == UNHEALTHY and "refused this gateway's login" in refused.reason
    down = verdict(Observed(None, unreachable="[Errno 111] Connection refused"), CFG, 1001.0)
    assert down.code == NO_REPORT and "cannot reach the broker at 127.0.0.1:1883" in down.reason


@pytest.mark.parametrize(("metrics", "says"), [
    ({"scanner_last_advert_age_s": -1, "uptime_s": 95.0},
     "the scanner has heard no advert in 95 s since start"),
    ({"scanner_last_advert_age_s": 40.0, "scanner_restarts": 6},
     "silent for 40 s, past its 30 s watchdog; 6 recoveries tried"),
    # the report is 10 s old: 25 s of silence then is 35 s now
    ({"scanner_last_advert_age_s": 25.0, "_late": 10.0}, "silent for 35 s"),
])
def test_a_dead_scanner_is_unhealthy(metrics: dict[str, float], says: str) -> None:
    late = metrics.pop("_late", 0.0)
    v = verdict(Observed(_state(**metrics)), CFG, 1000.0 + late)
    assert v.code == UNHEALTHY and says in v.reason, v
    assert "\n" not in v.reason


def test_a_scanner_recovering_within_its_window_or_starting_is_healthy() -> None:
    assert verdict(Observed(_state(scanner_last_advert_age_s=29.0)), CFG, 1000.0).code == HEALTHY
    starting = _state(scanner_last_advert_age_s=-1, uptime_s=5.0)
    assert verdict(Observed(starting), CFG, 1000.0).code == HEALTHY


@pytest.mark.parametrize(("seen", "metrics", "cause"), [
    (False, {}, "the broker holds no bundle for store 's': HQ is down, or it does not know"),
    (True, {}, "never reached the gateway: are its credentials refused on the bundle topic"),
    (True, {"bundle_rejected": 2}, "it refused 2 bundle(s): is hq_public_key HQ's current key"),
])
def test_no_bundle_a_minute_after_connecting_is_a_warning_with_the_cause(
    seen: bool, metrics: dict[str, float], cause: str
) -> None:
    late = _state(bundle_version=-1, connected_s=BUNDLE_GRACE_S + 5, **metrics)
    v = verdict(Observed(late, bundle_retained=seen), CFG, 1000.0)
    assert v.code == WARNING and cause in v.reason, v
    early = _state(bundle_version=-1, connected_s=BUNDLE_GRACE_S - 5, **metrics)
    assert verdict(Observed(early, bundle_retained=seen), CFG, 1000.0).code == HEALTHY


async def _health_line(cfg_path: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aislecast", "gateway", "health", "--config", str(cfg_path),
        "--timeout", "5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode(), err.decode()


@pytest.mark.parametrize(("metrics", "code", "says"), [
    ({"scanner_last_advert_age_s": -1, "uptime_s": 120.0}, UNHEALTHY,
     "the scanner has heard no advert in 12"),
    ({"scanner_last_advert_age_s": 300.0}, UNHEALTHY, "silent for 30"),
    ({"bundle_version": -1, "connected_s": 90.0}, WARNING,
     "no bundle a minute after connecting: the broker holds no bundle for store 'store-h'"),
])
async def test_cli_health_says_what_is_wrong_in_one_line(
    broker: MosquittoProcess, tmp_path: Path, metrics: dict[str, float], code: int, says: str
) -> None:
    """A retained report as a gateway with that problem publishes it, read by the CLI."""
    path = tmp_path / "gw.toml"
    path.write_text('gateway = "gw-h"\nstore = "store-h"\nhq_public_key = "k"\n'
                    f'[broker]\nport = {broker.port}\n[scanner]\nbackend = "bluez"\n')
    state = _state(**metrics)
    state = GatewayState(v=state.v, gateway="gw-h", store="store-h", status="online",
                         version="x", bundle_version=state.bundle_version, metrics=state.metrics,
                         ts=time.time())
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.publish(topics.gateway_state("store-h", "gw-h"), encode(state), qos=1, retain=True)
    rc, out, err = await _health_line(path)
    assert rc == code, (out, err)
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err
    assert err.startswith("aislecast: gw-h (store-h): "), err


async def test_cli_health_names_a_refused_login(tmp_path: Path) -> None:
    async with authenticated_broker(tmp_path) as broker:  # nobody may log in yet
        path = tmp_path / "gw.toml"
        path.write_text('gateway = "gw-h"\nstore = "store-h"\nhq_public_key = "k"\n'
                        f'[broker]\nport = {broker.port}\nusername = "gw.store-h.gw-h"\n'
                        'password = "not-issued"\n[scanner]\nbackend = "bluez"\n')
        rc, out, err = await _health_line(path)
    assert rc == UNHEALTHY, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "the broker refused this gateway's login (gw.store-h.gw-h): " in err, err
    assert "aislecast hq gateways add" in err
