"""The console's campaign editor, results, calendar and live push in a real browser
(Debian's chromium driven by Playwright) against a real HQ on a real broker: an event
batch published over MQTT shows up on the page without a reload.

Screenshots land in ``artifacts/console/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest

from aislecast.apps.scenarios import setup_store
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, encode
from edge.simstore import STORE_UUID, default_zones
from hq.accounts import Accounts
from hq.server import HqServer
from hq.service import HqService
from tests.harness import STORE, enter_campaign, until
from tests.test_console import ARTIFACTS, PASSWORD, _log_in, browser_page

pytestmark = pytest.mark.timeout(180)


@contextlib.asynccontextmanager
async def hq_with_store(broker: MosquittoProcess, tmp_path: Path) -> AsyncIterator[HqServer]:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0) as hq:
        setup_store(hq.service, STORE, default_zones(), STORE_UUID)
        hq.service.upsert_campaign(enter_campaign("produce", cid="produce-deal"))
        accounts = Accounts(hq.db)
        accounts.add_user("ann", "approver", password=PASSWORD)
        accounts.add_user("sam", "analyst", password=PASSWORD)
        accounts.add_user("stu", "store_staff", password=PASSWORD, stores=["other-store"])
        yield hq


async def log_in(page: Any, base: str, name: str) -> None:
    """test_console's login, then until the live stream is open."""
    await _log_in(page, base, name)
    await page.locator('#live[data-state="online"]').wait_for(timeout=15_000)


async def publish_batch(port: int, events: list[Event], gateway: str = "gw-1") -> None:
    """What a gateway does: its event batch on its events topic."""
    batch = EventBatch(v=SCHEMA_VERSION, store=STORE, gateway=gateway, events=events,
                       batch=f"b-{events[0].id}")
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-gw-{time.monotonic_ns()}") as c:
        await c.publish(topics.gateway_events(STORE, gateway), encode(batch), qos=1)


def offer_events(n: int, campaign: str, variant: str = "a", zone: str = "produce") -> list[Event]:
    now = time.time()
    return [Event(id=f"ev-{campaign}-{variant}-{i}-{time.monotonic_ns()}", kind="offer_published",
                  ts=now, store=STORE, gateway="gw-1", campaign=campaign, variant=variant,
                  zone=zone, offer=f"of-{i}-{time.monotonic_ns()}", inbox=f"inbox-{i}")
            for i in range(n)]


async def _field_error(page: Any, path: str) -> str:
    box = page.locator(f'#editor [data-error-for="{path}"]')
    await box.wait_for(state="visible", timeout=10_000)
    return str(await box.text_content() or "")


@pytest.mark.slow
async def test_editor_creates_refuses_inline_and_keeps_the_live_campaign(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with hq_with_store(broker, tmp_path) as hq, browser_page(tmp_path / "p") as page:
        base, svc = f"http://127.0.0.1:{hq.http_port}", hq.service
        await log_in(page, base, "ann")
        await page.locator("#editor").wait_for(state="visible", timeout=10_000)
        await _create_through_the_form(page, svc)
        await _refused_edits_change_nothing(page, svc)


async def _create_through_the_form(page: Any, svc: HqService) -> None:
    await page.get_by_label("Id", exact=True).fill("bakery-morning")
    await page.get_by_label("Name", exact=True).fill("Bakery mornings")
    await page.get_by_label("Stores (ids, comma separated)").fill(STORE)
    await page.locator("#ed-status").select_option("live")
    await page.locator("#ed-trigger-0-zones").fill("bakery")
    await page.locator("#ed-creatives-0-title").fill("Croissant -20%")
    await page.get_by_role("button", name="Add window").click()
    await page.locator("#ed-schedule-windows-0-start").fill("07:00")
    await page.locator("#ed-schedule-windows-0-end").fill("11:00")
    await page.locator("#ed-schedule-windows-0-days").fill("1, 2, 3, 4, 5")
    await page.get_by_role("button", name="Add variant").click()
    await page.locator("#ed-creatives-1-id").fill("b")
    await page.locator("#ed-creatives-1-title").fill("Two croissants for one")
    await page.locator("#ed-caps-per_day").fill("2")
    await page.get_by_role("button", name="Save campaign").click()
    await page.locator("#editor-status").filter(has_text="Saved").wait_for(timeout=10_000)
    c = svc.get_campaign("bakery-morning")
    assert (c.name, c.status, c.stores) == ("Bakery mornings", "live", [STORE])
    assert c.trigger.zones == ["bakery"]
    assert [cr.id for cr in c.creatives] == ["a", "b"] and c.caps.per_day == 2
    assert [(w.start, w.end, w.days) for w in c.schedule.windows] == [("07:00", "11:00", [1, 2, 3, 4, 5])]
    # the calendar shows it on weekdays only, pushed (no reload)
    cal = page.locator(f'#calendar [data-calendar-store="{STORE}"] '
                       'tr[data-calendar-campaign="bakery-morning"]')
    await cal.locator('td[data-day="1"]').filter(has_text="07:00\u201311:00").wait_for(timeout=10_000)
    assert await cal.locator('td[data-day="7"]').text_content() == ""
    await page.screenshot(path=str(ARTIFACTS / "editor-1-created.png"), full_page=True)
    # the form holds every field: read back as JSON it is the stored campaign, exactly
    await page.locator(".json-view summary").click()
    await page.get_by_role("button", name="Show the form as JSON").click()
    shown = json.loads(await page.locator("#editor-json").input_value())
    assert shown == msgspec.to_builtins(svc.get_campaign("bakery-morning"))


async def _refused_edits_change_nothing(page: Any, svc: HqService) -> None:

    # edit the live one: a new name and an impossible holdout. HQ refuses (422), the
    # problem is shown beside the holdout field, and the live campaign is unchanged
    await page.locator("#editor-pick").select_option("produce-deal")
    await page.wait_for_function("document.querySelector('#ed-id').value === 'produce-deal'")
    before = svc.get_campaign("produce-deal")
    await page.get_by_label("Name", exact=True).fill("Renamed but refused")
    await page.get_by_label("Holdout (%)").fill("150")
    await page.locator("#ed-creatives-0-url").fill("javascript:alert(1)")
    await page.get_by_role("button", name="Save campaign").click()
    assert "holdout_pct" in await _field_error(page, "holdout_pct")
    assert "not an http(s) link" in await _field_error(page, "creatives[0].url")
    assert await page.locator("#ed-holdout_pct").get_attribute("aria-invalid") == "true"
    assert "unchanged" in str(await page.locator("#editor-status").text_content())
    assert svc.get_campaign("produce-deal") == before  # nothing of the edit was saved
    await page.screenshot(path=str(ARTIFACTS / "editor-2-refused-inline.png"), full_page=True)

    # msgspec's type errors name the field too (the JSON view sends any shape)
    bad = {**msgspec.to_builtins(before), "caps": {"per_shopper": "many"}}
    await page.locator("#editor-json").fill(json.dumps(bad))
    await page.get_by_role("button", name="Save this JSON").click()
    assert "caps.per_shopper" in await _field_error(page, "caps.per_shopper")
    assert svc.get_campaign("produce-deal") == before

    # the witness: the same edit, fixed, is saved
    await page.get_by_label("Holdout (%)").fill("10")
    await page.locator("#ed-creatives-0-url").fill("https://shop.example/produce")
    await page.get_by_role("button", name="Save campaign").click()
    await page.locator("#editor-status").filter(has_text="Saved").wait_for(timeout=10_000)
    after = svc.get_campaign("produce-deal")
    assert (after.name, after.holdout_pct, after.creatives[0].url) == (
        "Renamed but refused", 10.0, "https://shop.example/produce")


@pytest.mark.slow
async def test_ingested_events_reach_the_page_and_its_chart_without_reload(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with browser_page(tmp_path / "p") as page:
        async with hq_with_store(broker, tmp_path) as hq:
            await _live_numbers(hq, broker, page)
        # HQ went away: the page says so (EventSource keeps retrying meanwhile)
        await page.locator('#live[data-state="offline"]').wait_for(timeout=15_000)
        assert "Offline" in str(await page.locator("#live").text_content())
        await page.screenshot(path=str(ARTIFACTS / "live-3-offline.png"), full_page=True)


async def _live_numbers(hq: HqServer, broker: MosquittoProcess, page: Any) -> None:
    base = f"http://127.0.0.1:{hq.http_port}"
    await log_in(page, base, "sam")  # an analyst: reads everything, edits nothing
    row = page.locator('#campaigns tr[data-campaign="produce-deal"]')
    await row.wait_for(timeout=10_000)
    await page.locator('#results[data-loaded="produce-deal"]').wait_for(timeout=10_000)
    assert await page.locator('#chart canvas').count() >= 1
    await page.screenshot(path=str(ARTIFACTS / "live-1-before.png"), full_page=True)
    assert await row.locator('[data-field="impressions"]').text_content() == "0"
    loads = await page.evaluate("performance.getEntriesByType('navigation').length")

    # a gateway's batch over MQTT: three offers of variant a, one of b in the bakery
    ingested = hq.ingest.stats.events_ingested
    await publish_batch(broker.port, offer_events(3, "produce-deal")
                        + offer_events(1, "produce-deal", variant="b", zone="bakery"))
    await until(lambda: hq.ingest.stats.events_ingested == ingested + 4)
    await row.locator('[data-field="impressions"]').filter(has_text="4").wait_for(timeout=10_000)
    await page.locator('#variants tr[data-variant="a"] [data-field="impressions"]').filter(
        has_text="3").wait_for(timeout=10_000)
    heat = page.locator(f'#heatmap tr[data-heat-store="{STORE}"] td[data-zone="bakery"]')
    assert await heat.text_content() == "0"  # deliveries: none reported yet
    assert await page.locator("#chart").get_attribute("data-points") == "168"
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == loads
    assert hq.metrics.snapshot()["live"]["notifications"]["ingest"] >= 1
    # an analyst gets no editor at all: not hidden controls, none
    assert await page.locator("#editor").is_hidden()
    assert await page.get_by_role("button", name="Save campaign").count() == 0
    await page.screenshot(path=str(ARTIFACTS / "live-2-after-ingest.png"), full_page=True)


@pytest.mark.slow
async def test_store_staff_see_only_their_stores(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with hq_with_store(broker, tmp_path) as hq, browser_page(tmp_path / "p") as page:
        base = f"http://127.0.0.1:{hq.http_port}"
        setup_store(hq.service, "other-store", default_zones(), "5f1c0000-0000-4000-8000-000000000002")
        hq.service.upsert_campaign(msgspec.structs.replace(
            enter_campaign("dairy", cid="other-deal"), stores=["other-store"]))
        await log_in(page, base, "stu")
        await page.locator('#campaigns tr[data-campaign="other-deal"]').wait_for(timeout=10_000)
        assert await page.locator('#campaigns tr[data-campaign="produce-deal"]').count() == 0
        assert await page.locator(f'#calendar [data-calendar-store="{STORE}"]').count() == 0
        await page.locator('#calendar [data-calendar-store="other-store"]').wait_for(timeout=10_000)
        assert await page.locator("#editor").is_hidden()
        await page.screenshot(path=str(ARTIFACTS / "staff-1.png"), full_page=True)
