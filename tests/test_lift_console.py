"""The console's lift cell in a real browser: "not enough data yet" with the counts
below the campaign's minimum per arm, the interval once both arms have it; and a
campaign paused by a rule says so in its status badge."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import PausedBy, PauseRule
from aislecast.kernel.schema import Event
from hq.accounts import Accounts
from tests.harness import STORE, enter_campaign, stack
from tests.purchases import add_purchase
from tests.test_console import ARTIFACTS, PASSWORD, browser_page
from tests.test_console import _cell as cell
from tests.test_console import _log_in as log_in


def _exposed(cid: str, treated: int, control: int) -> list[Event]:
    return [Event(id=f"{cid}-{i}", kind="decision", ts=time.time(), store=STORE, campaign=cid,
                  inbox=f"{cid}-i{i}", reason="holdout" if i >= treated else "offer",
                  variant=None if i >= treated else "a") for i in range(treated + control)]


async def test_lift_cell_is_honest(broker: MosquittoProcess, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    paused = msgspec.structs.replace(
        enter_campaign("dairy", cid="ruled"), status="paused",
        paused_by=PausedBy(PauseRule("dismiss_rate", above=0.5, after=50), 1.0,
                           {"dismiss_rate": 0.9}, "auto-paused by rule dismiss_rate: 90%"))
    campaigns = [enter_campaign("produce", cid="small"), enter_campaign("entrance", cid="big"),
                 paused]
    async with stack(broker.port, tmp_path, campaigns) as st, \
            browser_page(tmp_path / "chromium-profile") as page:
        st.hq.ingest.store_events(_exposed("small", 12, 3) + _exposed("big", 60, 40))
        for i in range(0, 60, 2):  # half the offered buy, a quarter of the holdout
            add_purchase(st.hq.db, store=STORE, inbox=f"big-i{i}", ts=time.time() + 60, value_cents=500)
        for i in range(60, 100, 4):
            add_purchase(st.hq.db, store=STORE, inbox=f"big-i{i}", ts=time.time() + 60, value_cents=500)
        Accounts(st.hq.db).add_user("mia", "marketer", password=PASSWORD)
        await log_in(page, st.url, "mia")
        await page.locator('tr[data-campaign="big"] [data-field="lift"]').filter(
            has_text="pp").wait_for(timeout=10_000)
        assert await cell(page, "small", "lift") == (
            "not enough data yet (offered 12, holdout 3; 30 each needed)")
        # 30/60 - 10/40 = +25 pp, Newcombe's interval
        assert await cell(page, "big", "lift") == "+25.0 pp [+5.5, +41.3] (offered 60, holdout 40)"
        assert await cell(page, "ruled", "status") == "paused by rule dismiss_rate"
        await page.screenshot(path=str(ARTIFACTS / "lift-honest.png"), full_page=True)
