"""The wallet's lead form (hq/static/wallet/lead.js) in chromium: a lead creative's offer
shows its form, the shopper fills and sends it, HQ acks it and stores the row."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from aislecast.kernel.campaign import Creative, FormField
from benchmarks.wallet_browser import CHROMIUM, enrol, wallet_browser
from tests.harness import STORE, enter_campaign, until
from tests.test_wallet import ARTIFACTS, _gateway_with, _walk, wallet_stack

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")]


async def test_the_wallet_sends_a_lead_form_and_hq_stores_it(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    c = msgspec.structs.replace(enter_campaign("produce", cid="tasting"), creatives=[
        Creative(id="a", title="Book a tasting", format="lead", cta="Book",
                 form=[FormField(name="name", label="Your name", required=True),
                       FormField(name="email", label="Email"),
                       FormField(name="consent_contact", label="You may contact me")])])
    async with wallet_stack(tmp_path, [c]) as (st, _, args), \
            wallet_browser(tmp_path / "profile", args) as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{st.url}/wallet/")
        me = await enrol(page, st.url, stores=[STORE], purposes=[])
        await _gateway_with(st)
        _walk(st, me["inbox"], bytes.fromhex(me["identity_key"]), int(me["rotation_k"]), "produce")
        form = page.locator(".offer[data-campaign='tasting'] form.lead-form")
        await form.wait_for(timeout=30_000)
        await form.get_by_label("Your name").fill("Ana")
        await form.get_by_label("Email").fill("ana@example.org")
        await form.get_by_label("You may contact me").check()
        await page.screenshot(path=str(ARTIFACTS / "lead-form.png"), full_page=True)
        await form.get_by_role("button", name="Send").click()
        await page.locator(".lead-sent").wait_for(timeout=5_000)
        await until(lambda: st.hq.db.query("SELECT fields FROM leads"), timeout=30)
        (fields,), = st.hq.db.query("SELECT fields FROM leads")
        assert json.loads(fields) == {"name": "Ana", "email": "ana@example.org",
                                      "consent_contact": "yes"}
        await page.wait_for_function("aislecastWallet.stats.feedback_acked >= 1", timeout=30_000)
        assert not await page.evaluate("Object.keys(aislecastWallet.state().unacked).length")
        await page.screenshot(path=str(ARTIFACTS / "lead-sent.png"), full_page=True)
        assert errors == []
