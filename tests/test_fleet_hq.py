"""Fleet health at HQ: a real gateway's state report carries its beacons (TLM battery
from the simulator, an unheard beacon), HQ's health route and alerts show them, and an
oversized or malformed state report is dropped and counted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import msgspec
import pytest

from aislecast.apps.cli import main
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.schema import MAX_REPORTED_BEACONS, Beacon, BeaconHealth, GatewayState
from edge.simstore import STORE_UUID
from firmware_config.floorplan import load_floorplan
from firmware_config.plan import make_plan, plan_to_json
from firmware_config.qr import HQ_TOKEN_ENV
from hq.accounts import Accounts
from hq.board import MAX_STATE_BYTES, GatewayBoard
from hq.fleet_health import FleetRules
from tests.harness import STORE, Stack, bearer, enter_campaign, stack, token_for
from tests.test_beacon_plan import EXAMPLE
from tests.test_console import ARTIFACTS, PASSWORD, _log_in, browser_page
from tests.test_gateway_health import _toml


async def _until(pred: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await pred():
            await asyncio.sleep(0.1)


def _plan_for(path: Path, beacon_id: str, zone: str) -> Path:
    """The example store's plan with its first beacon renamed to ``beacon_id``."""
    plan = msgspec.json.decode(plan_to_json(make_plan(load_floorplan(EXAMPLE))))
    plan["store_id"] = STORE
    plan["beacons"] = [plan["beacons"][0] | {"id": beacon_id, "zone": zone}]
    path.write_bytes(msgspec.json.encode(plan))
    return path


async def _check_from_hq(st: Stack, first: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """``aislecast beacons check --from-hq``: the same check, on what the gateways report."""
    plan = await asyncio.to_thread(_plan_for, tmp_path / "plan.json", first, "entrance")
    capsys.readouterr()
    code = await asyncio.to_thread(main, [
        "beacons", "check", "--plan", str(plan), "--from-hq", st.url, "--store", STORE,
        "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # the weak battery, and HQ's other beacons are not in this plan
    (b,) = report["beacons"]
    assert b["id"] == first and b["battery_mv"] == 2300 and b["receiver"] == "gw-1"
    assert "low_battery" in b["issues"] and "missing" not in b["issues"]
    assert "b-ghost" not in report["unknown"]  # never heard: not in the heard list
    assert f"b-{st.sim.beacons[1].zone}" in report["unknown"]
    # the same from the gateway's own report: `gateway heard` writes the heard.json
    cfg = await asyncio.to_thread(_toml, st)
    out = tmp_path / "heard.json"
    assert await asyncio.to_thread(main, ["gateway", "heard", "--config", str(cfg),
                                          "--out", str(out)]) == 0
    capsys.readouterr()
    code = await asyncio.to_thread(main, [
        "beacons", "check", "--plan", str(plan), "--heard", str(out), "--json"])
    local = json.loads(capsys.readouterr().out)
    assert code == 1 and local["beacons"][0]["battery_mv"] == 2300
    assert local["beacons"][0]["issues"] == b["issues"] and local["unknown"] == report["unknown"]
    # a store this token may not see: one line, exit 2
    code = await asyncio.to_thread(main, [
        "beacons", "check", "--plan", str(plan), "--from-hq", st.url, "--store", "other"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("aislecast: error:")]
    assert "no store 'other'" in line
    code = await asyncio.to_thread(main, [
        "beacons", "check", "--plan", str(plan), "--from-hq", st.url])
    assert code == 2 and "--store: is required" in capsys.readouterr().err


async def _console_shows_health(st: Stack, first: str, tmp_path: Path) -> None:
    """The console's store health table: the TLM battery and the unheard beacon."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    Accounts(st.hq.db).add_user("keeper", "store_staff", password=PASSWORD, stores=[STORE])
    async with browser_page(tmp_path / "profile") as page:
        await _log_in(page, st.url, "keeper")
        battery = page.locator(f'tr[data-beacon="{first}"] [data-field="battery"]')
        await battery.wait_for(state="visible", timeout=20_000)
        assert (await battery.text_content() or "").startswith("2300 mV")
        assert "low" in (await battery.get_attribute("class") or "")
        ghost = page.locator('tr[data-beacon="b-ghost"] [data-field="heard"]')
        assert await ghost.text_content() == "unheard"
        unheard = page.locator(f'li[data-alert="beacon:{STORE}/b-ghost/beacon_unheard"]')
        await unheard.wait_for(state="visible", timeout=20_000)
        await page.screenshot(path=str(ARTIFACTS / "fleet-health.png"), full_page=True)


async def _behind_alert(st: Stack, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """HQ's bundle version moves on and the gateway does not follow: ``behind``, then an
    alert once it lasts (here at once: ``behind_after_s=0``)."""
    await asyncio.to_thread(st.hq.db.execute,
                            "UPDATE stores SET bundle_version = bundle_version + 1 WHERE id = ?",
                            (STORE,))
    r = (await http.get(f"/api/stores/{STORE}/health", headers=admin)).json()
    assert r["gateways"][0]["behind"] is True
    assert r["gateways"][0]["bundle_version"] == r["bundle_version"] - 1
    rules = FleetRules(st.hq.service, st.hq.board, behind_after_s=0.0)
    kinds = {(c.source, c.kind) for c in await asyncio.to_thread(lambda: list(rules.conditions()))}
    assert (f"gateway:{STORE}/gw-1", "gateway_behind") in kinds
    assert (f"beacon:{STORE}/b-ghost", "beacon_unheard") in kinds  # witness: the same pass


async def test_gateway_reports_beacons_and_hq_shows_health_and_alerts(
        broker: MosquittoProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("entrance")]) as st, \
            httpx.AsyncClient(base_url=st.url) as http:
        # a beacon registered at HQ that nothing in the simulated store sends
        st.hq.service.upsert_beacon(STORE, Beacon(id="b-ghost", zone="entrance", uuid=STORE_UUID,
                                                  major=1, minor=99))
        await st.hq.service.publish_bundle(STORE)
        # the entrance beacon sends Eddystone TLM with a weak battery
        st.sim.beacons[0] = dataclasses.replace(st.sim.beacons[0], battery_mv=2300)
        first = st.sim.beacons[0].id
        gw = await st.start_gateway("gw-1", fleet={"unheard_after_s": 1.0}, health_every_s=0.3)
        admin = bearer(st.admin_token)
        health: dict[str, Any] = {}

        async def reported() -> bool:
            r = await http.get(f"/api/stores/{STORE}/health", headers=admin)
            assert r.status_code == 200, r.text
            health.update(r.json())
            rows = {b["id"]: b for b in health["beacons"]}
            return (rows.get(first, {}).get("battery_mv") == 2300
                    and rows.get("b-ghost", {}).get("unheard") is True)

        await _until(reported)
        rows = {b["id"]: b for b in health["beacons"]}
        assert rows[first]["low_battery"] and rows[first]["battery_percent"] == 30
        assert rows[first]["heard_by"] == "gw-1" and rows[first]["unheard"] is False
        (g,) = health["gateways"]
        assert g["status"] == "online" and g["bundle_version"] == health["bundle_version"] > 0
        assert g["behind"] is False and g["beacons_omitted"] == 0

        async def alert_ids() -> set[str]:
            r = await http.get("/api/alerts", headers=admin)
            return {a["id"] for a in r.json()["alerts"] if a["cleared_at"] is None}

        want = {f"beacon:{STORE}/b-ghost/beacon_unheard",
                f"beacon:{STORE}/{first}/beacon_low_battery"}
        assert want <= await alert_ids()
        # store staff: their store's health, another store's is a 404
        here = bearer(token_for(st.hq.db, "store_staff", stores=[STORE]))
        there = bearer(token_for(st.hq.db, "store_staff", stores=["other"]))
        assert (await http.get(f"/api/stores/{STORE}/health", headers=here)).status_code == 200
        assert (await http.get(f"/api/stores/{STORE}/health", headers=there)).status_code == 404
        assert (await http.get("/api/stores/nope/health", headers=admin)).status_code == 404

        monkeypatch.setenv(HQ_TOKEN_ENV, token_for(st.hq.db, "store_staff", stores=[STORE]))
        await _check_from_hq(st, first, tmp_path, capsys)
        await _console_shows_health(st, first, tmp_path)
        await _behind_alert(st, http, admin)

        await st.stop_gateway(gw)
        offline = f"gateway:{STORE}/gw-1/gateway_offline"

        async def gone() -> bool:
            return offline in await alert_ids()

        await _until(gone)
        r = (await http.get(f"/api/stores/{STORE}/health", headers=admin)).json()
        assert r["gateways"][0]["status"] == "offline"
        # an offline gateway's beacons are not trusted: nothing reports them now
        assert all(not b["reported"] for b in r["beacons"])


def _state(beacons: list[BeaconHealth] | None) -> GatewayState:
    return GatewayState(v=1, gateway="g", store="s", status="online", version="1",
                        bundle_version=3, beacons=beacons)


def test_board_drops_oversized_and_malformed_state_reports() -> None:
    board = GatewayBoard()
    ok = msgspec.json.encode(_state([BeaconHealth(id="b1", battery_mv=2900)]))
    board.on_state("s", "g", ok)
    assert board.stats.states == 1 and board.beacons[("s", "g")][0][0].battery_mv == 2900
    board.on_state("s", "g", b"{" + b" " * MAX_STATE_BYTES + b"}")
    assert board.stats.oversize_states == 1
    many = [BeaconHealth(id=f"b{i}") for i in range(MAX_REPORTED_BEACONS + 1)]
    board.on_state("s", "g", msgspec.json.encode(_state(many)))
    board.on_state("s", "g", ok.replace(b'"battery_mv":2900', b'"battery_mv":-5'))
    assert board.stats.bad_states == 2 and board.stats.states == 1
    # an older gateway's report without beacons is still applied
    board.on_state("s", "g", msgspec.json.encode(_state(None)))
    assert board.stats.states == 2


async def test_huge_and_bad_state_messages_over_mqtt_are_dropped_and_counted(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, []) as st, \
            aiomqtt.Client("127.0.0.1", broker.port, identifier="fake-gw") as c:
        topic = topics.gateway_state(STORE, "gw-fake")
        huge = _state([BeaconHealth(id=f"b{i}", zone="z" * 64) for i in range(MAX_REPORTED_BEACONS)])
        big = msgspec.json.encode(huge).replace(b'"metrics":{}', b'"metrics":{},"pad":"'
                                                + b"x" * MAX_STATE_BYTES + b'"')
        await c.publish(topic, big)
        await c.publish(topic, b'{"v":1,"gateway":"gw-fake","store":"' + STORE.encode()
                        + b'","status":"online","version":"1","beacons":[{"id":""}]}')
        await c.publish(topic, msgspec.json.encode(_state([BeaconHealth(id="b-real")])))
        board = st.hq.board
        await _until_true(lambda: board.stats.states >= 1)  # witness: the good one arrived
        assert board.stats.oversize_states == 1 and board.stats.bad_states == 1
        console = st.hq.metrics.snapshot()["console"]
        assert console["oversize_states"] == 1 and console["bad_states"] == 1
        await c.publish(topic, b"", retain=True)  # nothing retained is left behind


async def _until_true(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.05)
