"""Alerts at HQ (hq/alerts.py): the book's open/update/clear cycle on a fake clock, the HQ
failure-counter rules, and end to end: a real HQ and a real gateway whose scanner hears
nothing -> an alert at ``GET /api/alerts`` and in the console (Debian's chromium via
Playwright), hidden from another store's staff, cleared when adverts return.

Screenshots land in ``artifacts/console/`` (gitignored), as the console tests' do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from edge.sim_scanner import SimScanner
from edge.simstore import SimShopper, SimStore, default_zones
from hq.accounts import Accounts
from hq.alerts import AlertBook, AlertWatch, Condition, CounterRule
from hq.board import GatewayBoard
from hq.keyring import ring_path
from hq.metrics import HqMetrics
from hq.server import HqServer
from tests.fakeclock import FakeClock
from tests.harness import STORE, bearer, enter_campaign, stack, token_for
from tests.test_console import ARTIFACTS, PASSWORD, _log_in, browser_page

LOGGER = "aislecast.hq.alerts"
SILENT = Condition("gateway:s/gw-1", "gateway_problem", "critical", "the scanner is silent", "s")


def _open_of(book: AlertBook) -> list[str]:
    return [a.id for a in book.alerts() if a.cleared_at is None]


def test_an_alert_opens_once_is_logged_once_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    clock, book = FakeClock(), AlertBook(keep_cleared_s=600)
    metrics = HqMetrics({"alerts": book.stats})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(3):  # the same condition at three checks: one alert, one log line
            book.update([SILENT], clock.time())
            clock.advance(5)
    opened = [r for r in caplog.records if "alert opened" in r.getMessage()]
    assert len(opened) == 1 and opened[0].levelno == logging.ERROR
    (a,) = book.alerts()
    assert (a.id, a.store, a.cleared_at) == ("gateway:s/gw-1/gateway_problem", "s", None)
    assert a.last_seen - a.first_seen == 10
    text = generate_latest(metrics.registry).decode()
    assert 'aislecast_hq_alerts_opened_total{kind="gateway_problem"} 1.0' in text
    assert 'aislecast_hq_alerts_open{severity="critical"} 1.0' in text

    book.update([], clock.time())  # the condition went away
    assert _open_of(book) == [] and book.alerts()[0].cleared_at == clock.time()
    assert 'aislecast_hq_alerts_open{severity="critical"} 0.0' in generate_latest(metrics.registry).decode()
    clock.advance(601)
    book.update([], clock.time())  # kept for keep_cleared_s, then forgotten
    assert book.alerts() == []


def test_a_condition_back_after_clearing_opens_a_new_alert() -> None:
    clock, book = FakeClock(), AlertBook()
    book.update([SILENT], clock.time())
    book.update([], clock.time())
    clock.advance(1)
    book.update([SILENT], clock.time())
    assert book.stats.opened == {"gateway_problem": 2}
    assert _open_of(book) == [SILENT.source + "/" + SILENT.kind]


def test_an_hq_failure_counter_alerts_while_it_rises_and_heals() -> None:
    stats = {"failures": 0, "changes": 0}
    rule = CounterRule("keyring_reload_failing", "critical", "fix the key file",
                       lambda: stats["failures"], lambda: stats["changes"])
    clock = FakeClock()
    watch = AlertWatch(GatewayBoard(), [rule], source="hq:1", quiet_s=60, clock=clock.time)
    assert watch.check() == []  # witness: nothing failed, nothing open
    stats["failures"] += 1
    (a,) = watch.check()
    assert (a.source, a.kind, a.store, a.cleared_at) == ("hq:1", "keyring_reload_failing", None, None)
    clock.advance(30)
    assert watch.check()[0].cleared_at is None  # within quiet_s and no success yet
    stats["changes"] += 1  # a reload worked after the failure
    assert watch.check()[0].cleared_at == clock.time()
    stats["failures"] += 1  # failing again: a new alert
    watch.check()
    assert _open_of(watch.book) == ["hq:1/keyring_reload_failing"]
    clock.advance(61)  # quiet for quiet_s: healed
    assert all(x.cleared_at is not None for x in watch.check())


def test_gateway_offline_and_stale_are_judged_at_hq() -> None:
    clock, board = FakeClock(), GatewayBoard()
    watch = AlertWatch(board, stale_after_s=30, clock=clock.time)
    board.on_state("s", "gw-1", b'{"v":1,"gateway":"gw-1","store":"s","status":"offline","version":"x"}')
    assert [a.kind for a in watch.check()] == ["gateway_offline"]
    board.on_state("s", "gw-1", b'{"v":1,"gateway":"gw-1","store":"s","status":"online","version":"x"}')
    v = board.gateways("s")[0]
    v.state_at = clock.time() - 31  # HQ received its last report 31 s ago
    kinds = {a.kind: a.cleared_at for a in watch.check()}
    assert kinds["gateway_offline"] is not None and kinds["gateway_stale"] is None
    board.on_state("s", "gw-1", b"")  # decommissioned: its alerts clear
    assert len(watch.check()) == 2 and _open_of(watch.book) == []


async def test_a_keyring_that_fails_to_reload_alerts_hq_roles_only(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    """A real HQ whose keyring file is broken under it: the watcher's failure counter rises
    and an HQ alert opens, for unscoped roles only (it names no store)."""
    key = tmp_path / "k.pem"
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=key,
                        mqtt=MqttSettings(port=broker.port), http_port=0, keys_every_s=3600) as hq, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}") as http:
        admin, staff = token_for(hq.db, "admin"), token_for(hq.db, "store_staff", stores=[STORE])
        assert await _alerts(http, admin) == []  # witness: a healthy HQ has none
        await asyncio.to_thread(ring_path(key).write_text, "not a keyring", encoding="utf-8")
        assert not await hq.keys.check()
        assert hq.keys.stats.failures == 1
        (a,) = await _alerts(http, admin)
        assert (a["id"], a["severity"], a["store"]) == ("hq:1/keyring_reload_failing", "critical", None)
        assert "key file" in a["message"]
        assert await _alerts(http, staff) == []
        text = (await http.get("/metrics")).text
        assert 'aislecast_hq_alerts_opened_total{kind="keyring_reload_failing"} 1.0' in text


async def _alerts(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    r = await http.get("/api/alerts", headers=bearer(token))
    assert r.status_code == 200, r.text
    return list(r.json()["alerts"])


@pytest.mark.timeout(180)
async def test_a_silent_scanner_raises_an_alert_in_the_console_and_it_clears(
        broker: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with stack(broker.port, tmp_path, [enter_campaign("entrance")]) as st, \
            httpx.AsyncClient(base_url=st.url) as http:
        await st.hq.service.publish_bundle(STORE)
        aid = f"gateway:{STORE}/gw-1/gateway_problem"
        base = st.gateway_config
        monkeypatch.setattr(st, "gateway_config", lambda name="gw-1": base(name) | {
            "scanner": {"backend": "sim", "receivers": st.sim.receivers, "silent_after_s": 2.0},
            "health_every_s": 0.3})
        quiet = SimStore(default_zones(), beacons=[], seed=5)  # no beacon, no shopper: silence
        gw = await st.start_gateway("gw-1", scanner=lambda cb: SimScanner(quiet, cb))
        admin = st.admin_token
        staff_here = token_for(st.hq.db, "store_staff", stores=[STORE])
        staff_there = token_for(st.hq.db, "store_staff", stores=["other"])
        open_ids: list[str] = []

        async def seen() -> bool:
            open_ids[:] = [a["id"] for a in await _alerts(http, admin) if a["cleared_at"] is None]
            return aid in open_ids

        try:
            await _until_async(seen, timeout=15)
        except TimeoutError:
            raise AssertionError(f"no alert; HQ has {await _alerts(http, admin)}, the gateway "
                                 f"says {gw.health_problem()!r}") from None
        (alert,) = [a for a in await _alerts(http, admin) if a["id"] == aid]
        assert alert["severity"] == "critical" and alert["source"] == f"gateway:{STORE}/gw-1"
        assert "scanner" in alert["message"] and "aislecast doctor" in alert["message"]
        assert aid in [a["id"] for a in await _alerts(http, staff_here)]  # witness: staff see theirs
        assert await _alerts(http, staff_there) == []  # another store's staff see nothing
        opened = st.hq.metrics.snapshot()["alerts"]["opened"]
        assert opened.get("gateway_problem") == 1

        Accounts(st.hq.db).add_user("ops", "admin", password=PASSWORD)
        async with browser_page(tmp_path / "profile") as page:
            await _log_in(page, st.url, "ops")
            item = page.locator(f'li[data-alert="{aid}"]')
            await item.wait_for(state="visible", timeout=20_000)
            assert await item.locator('[data-field="severity"]').text_content() == "critical"
            assert "aislecast doctor" in (await item.locator('[data-field="message"]').text_content() or "")
            assert await item.locator('[data-field="source"]').text_content() == f"gateway:{STORE}/gw-1"
            assert await page.locator("#alerts-empty").is_hidden()
            await page.screenshot(path=str(ARTIFACTS / "5-alert-open.png"), full_page=True)

            # adverts return: a shopper walks in and stays, the gateway hears them
            e = st.hq.service.enroll(["offers"], [STORE])
            quiet.add_shopper(SimShopper(e.inbox, st.phone(e).token, [("entrance", 600.0)],
                                          start=time.monotonic(), speed_mps=5.0))

            async def cleared() -> bool:
                return any(a["id"] == aid and a["cleared_at"] is not None
                           for a in await _alerts(http, admin))

            await _until_async(cleared)
            await page.locator("#alerts-empty").wait_for(state="visible", timeout=20_000)
            assert await page.locator(f'li[data-alert="{aid}"]').count() == 0
            await page.screenshot(path=str(ARTIFACTS / "6-alert-cleared.png"), full_page=True)
        assert st.hq.metrics.snapshot()["alerts"]["cleared"].get("gateway_problem") == 1
        # nothing else was ever raised (no "no bundle" warning from the report made as it
        # connected, before its bundle arrived)
        assert [a["kind"] for a in await _alerts(http, admin)] == ["gateway_problem"]


async def _until_async(pred: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Poll an async ``pred`` (an HTTP call) until true; a liveness bound, not a latency."""
    async with asyncio.timeout(timeout):
        while not await pred():
            await asyncio.sleep(0.1)
