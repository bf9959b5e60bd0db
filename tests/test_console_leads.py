"""The console's Leads view (hq/static/leads.js) in a real browser (Debian's chromium
driven by Playwright): a shopper enrolled through the API gets a real gateway's lead
offer and submits the form from the reference phone over the broker; a marketer opens
the campaign's leads from its row, sees the row (newest first, a column per form field,
when, which store) and downloads the CSV with it. An approver, who may not read leads,
gets no Leads button, and the view opened anyway says the API's 403 instead of a table.

Screenshots land in ``artifacts/console/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path
from typing import Any

import pytest

from aislecast.apps.cmd_phone_lead import parse_fields, submit
from aislecast.kernel.broker import MosquittoProcess
from hq.accounts import Accounts
from tests.harness import STORE, Stack, enter_campaign, stack, until
from tests.test_console import ARTIFACTS, PASSWORD, browser_page
from tests.test_console_editor import log_in
from tests.test_leads import CID, _campaign, offered

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def _lead_from_a_phone(st: Stack) -> str:
    """Enrol through the API, walk to the produce aisle, submit the offer's form as the
    reference phone does (feedback on the broker, HQ's ack); returns the inbox."""
    async with offered(st, ["offers", "analytics"], timeout=30) as (_, enr, phone, offer):
        args = argparse.Namespace(offer=offer.id, campaign=CID, store=STORE, wait=20.0)
        assert await submit(phone, args, parse_fields(["name=Ana", "email=ana@example.org"]))
    await until(lambda: st.hq.db.query("SELECT 1 FROM leads"), timeout=30)
    return enr.inbox


async def _approver_sees_no_leads(ann: Any, st: Stack) -> None:
    """An approver may not read leads: no button (the row's Pause button, a witness that
    the actions are drawn); the view forced open says the API's 403, shows no table."""
    await log_in(ann, st.url, "ann")
    await ann.locator("#approvals").wait_for(state="visible", timeout=15_000)  # role known
    their = ann.locator(f'tr[data-campaign="{CID}"]')
    await their.get_by_role("button", name="Pause Book a tasting").wait_for(timeout=15_000)
    assert await their.locator('[data-action="leads"]').count() == 0
    await ann.evaluate("([cid, name]) => openLeads(cid, name)", [CID, "Book a tasting"])
    state = ann.locator("#leads-state")
    await state.wait_for(state="visible", timeout=15_000)
    assert "may not read leads" in str(await state.text_content())
    assert not await ann.locator("#leads-table").is_visible()
    assert not await ann.locator("#leads-csv").is_visible()
    assert await ann.locator("#leads-table tbody tr").count() == 0
    await ann.screenshot(path=str(ARTIFACTS / "leads-refused.png"), full_page=True)
    assert st.hq.metrics.snapshot()["auth"]["refusals"].get("wrong_role", 0) >= 1  # HQ said no


async def test_a_marketer_sees_a_campaigns_leads_and_downloads_the_csv(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    quiet = enter_campaign("dairy", cid="quiet")  # no one walks there: no leads
    async with stack(broker.port, tmp_path, [_campaign(), quiet]) as st, \
            browser_page(tmp_path / "mia") as mia, browser_page(tmp_path / "ann") as ann:
        inbox = await _lead_from_a_phone(st)
        accounts = Accounts(st.hq.db)
        accounts.add_user("mia", "marketer", password=PASSWORD)
        accounts.add_user("ann", "approver", password=PASSWORD)
        errors: list[str] = []
        mia.on("pageerror", lambda e: errors.append(str(e)))

        await log_in(mia, st.url, "mia")
        await mia.get_by_role("button", name="Leads of dairy offer").click()
        await mia.locator('#leads[data-loaded="quiet"]').wait_for(timeout=15_000)
        assert await mia.locator("#leads-empty").is_visible()
        assert not await mia.locator("#leads-table").is_visible()
        row = mia.locator(f'tr[data-campaign="{CID}"]')
        await row.get_by_role("button", name="Leads of Book a tasting").click()
        await mia.locator(f'#leads[data-loaded="{CID}"]').wait_for(timeout=15_000)
        table = mia.locator("#leads-table")
        assert await table.is_visible() and not await mia.locator("#leads-empty").is_visible()
        heads = await table.locator("thead th").all_text_contents()
        assert heads == ["Submitted", "Store", "Your name", "Email", "Guests"]  # the form's order
        lead = table.locator("tbody tr")
        assert await lead.count() == 1
        assert await lead.locator('[data-field="name"]').text_content() == "Ana"
        assert await lead.locator('[data-field="email"]').text_content() == "ana@example.org"
        assert await lead.locator('[data-field="party_size"]').text_content() == ""
        assert await lead.locator('[data-field="store"]').text_content() == STORE
        (ts,), = st.hq.db.query("SELECT ts FROM leads")
        shown = str(await lead.locator("time").get_attribute("datetime"))
        assert shown[:19] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(float(ts)))
        await mia.screenshot(path=str(ARTIFACTS / "leads.png"), full_page=True)

        async with mia.expect_download() as download:
            await mia.get_by_role("link", name="Download CSV").click()
        saved = await (await download.value).path()
        rows = list(csv.DictReader(io.StringIO(Path(saved).read_text(encoding="utf-8"))))
        assert [(r["name"], r["email"], r["store"], r["inbox"]) for r in rows] == [
            ("Ana", "ana@example.org", STORE, inbox)]
        reads = st.hq.db.query("SELECT actor, after FROM audit WHERE action = 'leads.read'"
                               " ORDER BY ts")
        assert [(a, '"csv"' in str(b)) for a, b in reads] == [
            ("user:mia", False), ("user:mia", False), ("user:mia", True)]  # quiet, tasting, CSV

        await _approver_sees_no_leads(ann, st)
        assert len(st.hq.db.query("SELECT 1 FROM audit WHERE action = 'leads.read'")) == 3
        assert errors == []
