"""`aislecast gateway health` reads the gateway's local state report and judges it.

It never logs in to the broker: on the product's listeners (``use_username_as_clientid``,
and ``use_identity_as_username`` over mutual TLS) a login with the gateway's own
credentials would take over the gateway's client id and disconnect it. The live tests
run on the authenticated broker, plain and mutual TLS, and check both the verdict and
that the gateway kept its one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from aislecast.apps.scenarios import setup_store
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, GatewayState
from edge.simstore import STORE_UUID, default_zones
from gateway.app import Gateway
from gateway.config import load_config
from gateway.health import BUNDLE_GRACE_S, HEALTHY, NO_REPORT, UNHEALTHY, WARNING, observe, verdict
from gateway.report import REPORT_MODE, BundleReport, LinkReport, LocalReport, NoReport, ReportWriter
from tests.harness import STORE, Stack, authenticated_stack, enter_campaign, stack, until


async def _cli(cfg_path: Path, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aislecast", "gateway", "health", "--config", str(cfg_path),
        "--timeout", "0", *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode(), err.decode()


async def _health_json(cfg_path: Path) -> tuple[int, dict[str, Any]]:
    code, out, _ = await _cli(cfg_path, "--json")
    return code, json.loads(out)


def _toml(st: Stack, name: str = "gw-1") -> Path:
    """The gateway's config for the command. Its health_every_s is 10 s (stale past
    30 s) while the gateway under test reports every second: a loaded machine may be
    slow to start the command, and that must not read as a stale report."""
    user = st.logins.get(name, ("",))[0]
    path = st.work / f"{name}.toml"
    # (the check reads no key: hq_public_key is only the gateway's)
    path.write_text(f'gateway = "{name}"\nstore = "{STORE}"\nhq_public_key = "unused"\n'
                    f'data_dir = "{st.work / name}"\nhealth_every_s = 10.0\n[broker]\n'
                    f'port = {st.mqtt.port}\n' + (f'username = "{user}"\n' if user else "")
                    + '[scanner]\nbackend = "sim"\n')
    return path


async def _next_report(gw: Gateway, after: float) -> LocalReport:
    """The first report the gateway writes after unix time ``after`` (its first report may
    not be written yet when the link is up: a loaded machine runs the ticker late)."""
    seen = await asyncio.to_thread(observe, gw.cfg)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while not (isinstance(seen, LocalReport) and seen.state.ts > after):
                await asyncio.sleep(0.05)
                seen = await asyncio.to_thread(observe, gw.cfg)
    assert isinstance(seen, LocalReport) and seen.state.ts > after, seen
    return seen


async def _healthy_and_undisturbed(st: Stack) -> None:
    await st.hq.service.publish_bundle(STORE)
    gw = await st.start_gateway()
    await until(gw.link.connected.is_set)
    path = _toml(st)
    assert (await _next_report(gw, time.time())).state.bundle_version >= 1
    assert (gw.link.stats.connects, gw.link.stats.disconnects) == (1, 0)
    code, seen = await _health_json(path)
    assert code == HEALTHY, seen
    # the check read this gateway's fresh report (its process, its link, a recent stamp)
    report = seen["report"]
    assert report["pid"] == os.getpid() and report["link"]["connected"] is True
    assert report["state"]["bundle_version"] >= 1 and report["state"]["status"] == "online"
    assert time.time() - report["state"]["ts"] < 30
    # and the gateway still has its one connection, in the report it writes afterwards
    after = await _next_report(gw, report["state"]["ts"])
    assert after.link.connected and after.link.connects == 1
    assert (gw.link.stats.connects, gw.link.stats.disconnects) == (1, 0)
    assert gw.link.connected.is_set()
    assert (Path(gw.cfg.data_dir) / "state.json").stat().st_mode & 0o777 == REPORT_MODE


async def test_health_of_a_gateway_on_the_authenticated_broker_leaves_it_connected(
        tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, [enter_campaign("produce")]) as st:
        await _healthy_and_undisturbed(st)


async def test_health_of_a_gateway_over_mutual_tls_leaves_it_connected(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, [enter_campaign("produce")], tls=True) as st:
        await _healthy_and_undisturbed(st)


async def test_health_of_a_running_then_stopped_gateway(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")]) as st:
        path = _toml(st)
        code, out, err = await _cli(path)  # before it ever ran
        assert code == NO_REPORT and "state.json does not exist" in err, (out, err)
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        await until(gw.link.connected.is_set)
        await _next_report(gw, time.time())
        code, seen = await _health_json(path)
        assert code == HEALTHY, seen
        await st.stop_gateway(gw)
        code, seen = await _health_json(path)
        assert code == UNHEALTHY and "offline" in str(seen["verdict"]), seen
        assert seen["report"]["stopped"] is True


async def test_health_names_the_login_the_broker_refused(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, []) as st:
        st.gateway_config()  # issues its login: the gateway then tries another password
        path = _toml(st)
        user = st.logins["gw-1"][0]
        gw = await st.start_gateway(wait_ready=False, broker={
            "port": st.mqtt.port, "username": user, "password": "not-issued"})
        await until(lambda: gw.link.login_refused is not None)
        await _next_report(gw, time.time())
        code, out, err = await _cli(path)
    assert code == UNHEALTHY, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"the broker refused this gateway's login ({user}): " in err, err
    assert "aislecast hq gateways add" in err


async def test_a_bundle_the_acl_hides_is_granted_but_never_arrives(tmp_path: Path) -> None:
    """Why the cause "no bundle arrived since it connected" names the ACL too: Mosquitto
    (2.0.11, acl_file) grants a subscription its ACL does not let the login read (the
    SUBACK says granted, so MqttLink.refused_subscriptions stays empty) and withholds the
    messages. A SUBACK refusal, from a broker that sends one, is its own cause."""
    async with authenticated_stack(tmp_path, []) as st:
        setup_store(st.hq.service, "store-o", default_zones(), STORE_UUID)
        await st.hq.service.publish_bundle("store-o")
        await st.hq.service.publish_bundle(STORE)
        st.gateway_config("gw-2")  # issues its login (store-t's ACL block)
        assert st.hq.broker_sync is not None
        await st.hq.broker_sync.flush()
        user, password = st.logins["gw-2"]
        hidden, own = topics.bundle("store-o"), topics.bundle(STORE)
        arrived: list[str] = []

        async def on_message(msg: aiomqtt.Message) -> None:
            arrived.append(msg.topic.value)

        # retained messages follow each SUBACK in order: once its own store's bundle
        # is here, the hidden one would have come first
        async with MqttLink(MqttSettings(port=st.mqtt.port, username=user, password=password),
                            client_id=user, handler=on_message,
                            subscriptions=[(hidden, 1), (own, 1)]) as link:
            await link.wait_connected(20)
            await until(lambda: own in arrived)
        assert arrived == [own]
        assert link.refused_subscriptions == {}


# ---- verdicts of one report ---------------------------------------------------------
CFG = load_config({"gateway": "g", "store": "s", "hq_public_key": "k", "health_every_s": 10.0,
                   "scanner": {"backend": "bluez", "silent_after_s": 30.0}})
WORKING = {"bundle_version": 3.0, "scanner_last_advert_age_s": 0.2, "uptime_s": 500.0,
           "connected_s": 400.0}


def _local(metrics: dict[str, float] | None = None, *, link: LinkReport | None = None,
           bundle: BundleReport | None = None, stopped: bool = False, ts: float = 1000.0
           ) -> LocalReport:
    m = {k: v for k, v in (WORKING | (metrics or {})).items() if v >= 0}  # -1: absent (None)
    state = GatewayState(v=SCHEMA_VERSION, gateway="g", store="s", status="online", version="x",
                         bundle_version=int(m.get("bundle_version", 0)), metrics=m, ts=ts)
    return LocalReport(pid=1, stopped=stopped, state=state,
                       link=link or LinkReport(connected=True, connects=1),
                       bundle=bundle or BundleReport())


def test_verdicts_name_what_to_do() -> None:
    assert verdict(_local(), CFG, 1005.0).code == HEALTHY
    assert verdict(NoReport("x does not exist"), CFG, 1005.0).code == NO_REPORT
    stale = verdict(_local(), CFG, 1100.0)
    assert stale.code == UNHEALTHY and "last report 100 s old" in stale.reason
    stopped = verdict(_local(stopped=True), CFG, 1001.0)
    assert stopped.code == UNHEALTHY and "offline" in stopped.reason
    assert "credentials" in verdict(_local({"publisher_denied": 2}), CFG, 1001.0).reason
    refused = verdict(_local(link=LinkReport(connected=False, login_refused="[code:134] Bad user "
                                             "name or password")), CFG, 1001.0)
    assert refused.code == UNHEALTHY and "refused this gateway's login" in refused.reason
    down = verdict(_local(link=LinkReport(connected=False, last_error="[Errno 111] Connection "
                                          "refused")), CFG, 1001.0)
    assert down.code == NO_REPORT and "cannot reach the broker at 127.0.0.1:1883" in down.reason
    assert "Connection refused" in down.reason


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
    v = verdict(_local(metrics), CFG, 1000.0 + late)
    assert v.code == UNHEALTHY and says in v.reason, v
    assert "\n" not in v.reason


def test_a_scanner_recovering_within_its_window_or_starting_is_healthy() -> None:
    assert verdict(_local({"scanner_last_advert_age_s": 29.0}), CFG, 1000.0).code == HEALTHY
    assert verdict(_local({"scanner_last_advert_age_s": -1, "uptime_s": 5.0}), CFG, 1000.0).code == HEALTHY


@pytest.mark.parametrize(("bundle", "cause"), [
    (BundleReport(), "no bundle for store 's' arrived since it connected: the broker holds none"),
    (BundleReport(subscription_refused="Not authorized (0x87)"),
     "the broker refused its subscription to the bundle topic (Not authorized (0x87)): check "
     "the broker's ACL"),
    (BundleReport(received_since_connect=1, refused={"unknown_key": 2},
                  last_refused="unknown_key: signed by key k2, which is not pinned"),
     "it refused 2 bundle(s) (last: unknown_key: signed by key k2, which is not pinned): is "
     "hq_public_key HQ's current key"),
    (BundleReport(received_since_connect=1), "1 bundle message(s) arrived but none was applied"),
])
def test_no_bundle_a_minute_after_connecting_is_a_warning_with_the_cause(
    bundle: BundleReport, cause: str
) -> None:
    late = _local({"bundle_version": -1, "connected_s": BUNDLE_GRACE_S + 5}, bundle=bundle)
    v = verdict(late, CFG, 1000.0)
    assert v.code == WARNING and cause in v.reason, v
    early = _local({"bundle_version": -1, "connected_s": BUNDLE_GRACE_S - 5}, bundle=bundle)
    assert verdict(early, CFG, 1000.0).code == HEALTHY


@pytest.mark.parametrize(("metrics", "code", "says"), [
    ({"scanner_last_advert_age_s": -1, "uptime_s": 120.0}, UNHEALTHY,
     "the scanner has heard no advert in 12"),
    ({"scanner_last_advert_age_s": 300.0}, UNHEALTHY, "silent for 30"),
    ({"bundle_version": -1, "connected_s": 90.0}, WARNING,
     "no bundle a minute after connecting: no bundle for store 'store-h' arrived"),
])
async def test_cli_health_says_what_is_wrong_in_one_line(
    tmp_path: Path, metrics: dict[str, float], code: int, says: str
) -> None:
    """A report as a gateway with that problem writes it, read by the command."""
    path = tmp_path / "gw.toml"
    path.write_text('gateway = "gw-h"\nstore = "store-h"\nhq_public_key = "k"\n'
                    f'data_dir = "{tmp_path}"\n[scanner]\nbackend = "bluez"\n')
    local = _local(metrics, ts=time.time())
    state = GatewayState(v=SCHEMA_VERSION, gateway="gw-h", store="store-h", status="online",
                         version="x", bundle_version=local.state.bundle_version,
                         metrics=local.state.metrics, ts=local.state.ts)
    writer = ReportWriter(tmp_path / "state.json")
    await asyncio.to_thread(writer.write, LocalReport(pid=1, state=state, link=local.link,
                                                      bundle=local.bundle))
    rc, out, err = await _cli(path)
    assert rc == code, (out, err)
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err
    assert err.startswith("aislecast: gw-h (store-h): "), err


async def test_no_write_lands_after_the_stopped_report(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path / "state.json")
    await asyncio.to_thread(writer.write, _local(stopped=True))
    await asyncio.to_thread(writer.write, _local(ts=2000.0))  # a periodic write, late
    seen = await asyncio.to_thread(observe, load_config(
        {"gateway": "g", "store": "s", "hq_public_key": "k", "data_dir": str(tmp_path),
         "scanner": {"backend": "sim"}}))
    assert isinstance(seen, LocalReport) and seen.stopped and seen.state.ts == 1000.0


def test_a_timeout_over_tls_names_the_handshake(tmp_path: Path) -> None:
    """aiomqtt shows a refused TLS handshake (a revoked certificate) only as a timeout."""
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # only its presence is checked at load
    cfg = load_config({"gateway": "g", "store": "s", "hq_public_key": "k",
                       "broker": {"port": 8883, "tls_ca": str(ca)}, "scanner": {"backend": "sim"}})
    down = LinkReport(connected=False, last_error="Operation timed out")
    v = verdict(_local(link=down), cfg, 1001.0)
    assert v.code == NO_REPORT and "cannot reach the broker at 127.0.0.1:8883" in v.reason, v
    assert "often a refused handshake: check tls_ca, tls_cert and tls_key" in v.reason
    assert "handshake" not in verdict(_local(link=down), CFG, 1001.0).reason  # plain TCP
