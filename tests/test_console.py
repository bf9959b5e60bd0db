"""The marketers' console in a real browser (Debian's chromium driven by Playwright) against
a real HQ with a gateway and phones on the private broker, so the numbers move.

Screenshots land in ``artifacts/console/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from aislecast.apps.phone import PhoneBehaviour
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from edge.simstore import SimShopper
from hq.accounts import Accounts
from hq.server import HqServer
from tests.harness import STORE, Stack, bearer, enter_campaign, stack, token_for
from tests.harness import until as _until

CHROMIUM = os.environ.get("AISLECAST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.timeout(180)


HAVE_CHROMIUM = Path(CHROMIUM).exists()


@contextlib.asynccontextmanager
async def browser_page(profile: Path, *, args: Sequence[str] = (),
                       viewport: tuple[int, int] = (1280, 900)) -> AsyncIterator[Any]:
    """A page of a fresh chromium profile; ``args`` are more command-line flags."""
    if not HAVE_CHROMIUM:
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    async with async_playwright() as pw:
        # a fresh profile per test: Playwright passes it to chromium as --user-data-dir
        ctx = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=[*ARGS, *args],
            viewport={"width": viewport[0], "height": viewport[1]})
        try:
            yield ctx.pages[0] if ctx.pages else await ctx.new_page()
        finally:
            await ctx.close()




def _walk(st: Stack, phones: list[Any], zone: str, start_in: float = 0.0) -> None:
    for i, p in enumerate(phones):
        st.sim.add_shopper(SimShopper(p.inbox, p.token, [("entrance", 1.0), (zone, 2.5)],
                                      start=time.monotonic() + start_in + 0.7 * i, speed_mps=6.0))


PASSWORD = "a long console password"  # noqa: S105 - a test account's


async def _log_in(page: Any, base: str, name: str) -> None:
    """The console sends a browser without a session to the login page; log in there."""
    await page.goto(f"{base}/console")
    await page.wait_for_url(f"{base}/console/login")
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/console")


async def _cell(page: Any, cid: str, field: str) -> str:
    text = await page.locator(f'tr[data-campaign="{cid}"] [data-field="{field}"]').text_content()
    return str(text or "")


async def _opens_and_reach_show(page: Any, cid: str, *, most: int) -> None:
    """Opens, then the Reach column: different shoppers delivered (hq.reach), at most
    the ``most`` shoppers granting analytics (the anonymous ones are not among them),
    at most the deliveries."""
    for field in ("opens", "reach"):
        await page.wait_for_function(
            """([cid, field]) => {
                const td = document.querySelector(`tr[data-campaign="${cid}"] [data-field="${field}"]`);
                return td && Number(td.textContent) > 0;
            }""", arg=[cid, field], timeout=30_000)
    reach = int(await _cell(page, cid, "reach"))
    assert reach <= most and reach <= int(await _cell(page, cid, "deliveries"))


async def _tick_flash_store(st: Stack, page: Any) -> None:
    """The flash form lists only stores HQ has, none ticked by default: not a store that
    exists only because a misconfigured gateway reported in. Ticks the one store."""
    st.hq.board.on_state("typo-store", "gw-x", b'{"v":1,"gateway":"gw-x",'
                         b'"store":"typo-store","status":"online","version":"1"}')
    await page.locator('[data-store="typo-store"]').wait_for(timeout=10_000)  # it is shown
    boxes = page.locator("#flash-stores input")
    assert await boxes.evaluate_all("bs => bs.map(b => [b.value, b.checked])") == [[STORE, False]]
    await boxes.first.check()


@pytest.mark.slow
async def test_console_shows_live_numbers_pauses_and_sends_flash(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    campaigns = [enter_campaign("produce", cid="produce-deal", holdout=20.0),
                 enter_campaign("dairy", cid="dairy-deal")]
    async with stack(broker.port, tmp_path, campaigns) as st, \
            browser_page(tmp_path / "chromium-profile") as page:
        svc = st.hq.service
        # half grant analytics: only they count among a campaign's shoppers (hq.reach)
        enrolled = [svc.enroll(["offers", "analytics"] if i % 2 else ["offers"], [STORE])
                    for i in range(10)]
        await svc.publish_bundle(STORE)
        gw = await st.start_gateway()
        async with contextlib.AsyncExitStack() as phones_cm:
            like = PhoneBehaviour(open_p=1.0, click_p=0.7, redeem_p=0.7, react_s=(0.1, 0.4))
            phones = [await phones_cm.enter_async_context(st.phone(e, behaviour=like))
                      for e in enrolled]
            for p in phones:
                await p.link.wait_connected(10)
            base = st.url
            Accounts(st.hq.db).add_user("ann", "approver", password=PASSWORD)
            await _log_in(page, base, "ann")
            row = page.locator('tr[data-campaign="produce-deal"]')
            await row.wait_for(timeout=10_000)
            assert await _cell(page, "produce-deal", "status") == "live"
            before = await _cell(page, "produce-deal", "impressions")
            await page.screenshot(path=str(ARTIFACTS / "1-before.png"), full_page=True)

            # shoppers walk to the produce aisle: the numbers move without a reload
            _walk(st, phones, "produce")
            await page.wait_for_function(
                """([cid, before]) => {
                    const sel = `tr[data-campaign="${cid}"] [data-field="impressions"]`;
                    const td = document.querySelector(sel);
                    return td && td.textContent !== before && Number(td.textContent) > 0;
                }""", arg=["produce-deal", before], timeout=30_000)
            await page.locator('[data-gateway="gw-1"] [data-field="status"]').filter(
                has_text="online").wait_for(timeout=15_000)
            await _until(lambda: gw.parts.recorder.stats.offers >= 2)
            # the screenshot waits for a refresh that shows opens (the phones open every
            # offer), so CTR is filled in too, and reach
            await _opens_and_reach_show(page, "produce-deal", most=5)
            await page.screenshot(path=str(ARTIFACTS / "2-live.png"), full_page=True)

            # pause from the console: HQ stores it and publishes a delta to the store
            deltas, seq = svc.stats.deltas_published, gw.parts.bundles.delta_seq
            await row.get_by_role("button", name="Pause produce offer").click()
            await page.locator('tr[data-campaign="produce-deal"] [data-field="status"]').filter(
                has_text="paused").wait_for(timeout=10_000)
            assert svc.get_campaign("produce-deal").status == "paused"
            assert svc.stats.deltas_published > deltas
            assert "paused" in (await page.locator("#notice").text_content() or "")
            await _until(lambda: gw.parts.bundles.delta_seq > seq)  # the gateway applied the pause

            await _tick_flash_store(st, page)
            await page.get_by_label("Title").fill("Fresh bread -30% now")
            await page.get_by_label("Message").fill("Until 6 pm at the bakery")
            await page.get_by_label("Valid for (minutes)").fill("5")
            await page.get_by_role("button", name="Send flash campaign").click()
            await page.locator("#notice").filter(has_text="Flash campaign").wait_for(timeout=10_000)
            flashes = [c for c in svc.campaigns() if c.scenario == "flash"]
            assert [(c.name, c.stores, c.validity_s) for c in flashes] == [
                ("Fresh bread -30% now", [STORE], 300.0)]
            await page.locator(f'tr[data-campaign="{flashes[0].id}"]').wait_for(timeout=5_000)
            await page.screenshot(path=str(ARTIFACTS / "3-paused-and-flash.png"), full_page=True)

            # resume brings it back live
            await row.get_by_role("button", name="Resume produce offer").click()
            await page.locator('tr[data-campaign="produce-deal"] [data-field="status"]').filter(
                has_text="live").wait_for(timeout=10_000)
            assert svc.get_campaign("produce-deal").status == "live"
            await _cross_origin_posts_are_refused(st, page, base)

            # logging out ends the session: the page goes back to the login
            await page.get_by_role("button", name="Log out").click()
            await page.wait_for_url(f"{base}/console/login")
            async with httpx.AsyncClient(base_url=base, cookies=await _cookies(page)) as c:
                assert (await c.get("/api/console/campaigns")).status_code == 401


async def _cookies(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in await page.context.cookies()}


async def _cross_origin_posts_are_refused(st: Stack, page: Any, base: str) -> None:
    """CSRF: another origin's text/plain POST (the request a form or a no-cors fetch
    makes) must not pause a campaign; the console's own POSTs (above) did."""
    svc, refusals = st.hq.service, st.hq.metrics.snapshot()["auth"]["refusals"]
    evil = base.replace("127.0.0.1", "localhost")  # another origin and site, same server
    await page.goto(f"{evil}/console/login")
    await page.evaluate("""(url) => fetch(url, {method: "POST", mode: "no-cors",
        credentials: "include", headers: {"content-type": "text/plain"}, body: "x"})""",
        f"{base}/api/campaigns/produce-deal/pause")
    # the same forged request with the victim's cookie attached (as a browser without
    # SameSite would): refused by the Origin check, and without Origin by the CSRF token
    jar = await _cookies(page)
    async with httpx.AsyncClient(base_url=base, cookies=jar) as c:
        plain = {"content-type": "text/plain"}
        r = await c.post("/api/campaigns/produce-deal/pause", content=b"x",
                         headers=plain | {"origin": evil})
        assert r.status_code == 403 and r.json()["reason"] == "cross_origin"
        r = await c.post("/api/campaigns/produce-deal/pause", content=b"x", headers=plain)
        assert r.status_code == 403 and r.json()["reason"] == "csrf"
        assert svc.get_campaign("produce-deal").status == "live"  # nothing changed
        now = st.hq.metrics.snapshot()["auth"]["refusals"]
        assert now.get("csrf", 0) > refusals.get("csrf", 0)
        # the witness: the same session with its CSRF token may pause
        r = await c.post("/api/campaigns/produce-deal/pause",
                         headers={"x-csrf-token": jar["aislecast_csrf"], "origin": base})
        assert r.status_code == 200 and r.json()["status"] == "paused"
    await page.goto(f"{base}/console")
    await page.screenshot(path=str(ARTIFACTS / "4-after-csrf.png"), full_page=True)


async def test_console_empty_state(broker: MosquittoProcess, tmp_path: Path) -> None:
    """No stores and no campaigns: the page says so instead of showing empty tables."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0) as hq:
        base = f"http://127.0.0.1:{hq.http_port}"
        async with httpx.AsyncClient(base_url=base, headers=bearer(token_for(hq.db, "analyst"))) as c:
            assert (await c.get("/api/console/campaigns")).json()["campaigns"] == []
            assert (await c.get("/console/static/console.js")).status_code == 200
        Accounts(hq.db).add_user("sam", "analyst", password=PASSWORD)
        async with browser_page(tmp_path / "profile") as page:
            await _log_in(page, base, "sam")
            await page.locator("#campaigns-empty").wait_for(state="visible", timeout=10_000)
            assert await page.locator("#campaigns").is_hidden()
            await page.locator("#stores-empty").wait_for(state="visible", timeout=10_000)
            await page.locator("#alerts-empty").wait_for(state="visible", timeout=10_000)
            assert await page.locator("#alerts").is_hidden()
            await page.screenshot(path=str(ARTIFACTS / "0-empty.png"), full_page=True)
