"""The console's Approvals section in a real browser (Debian's chromium driven by
Playwright), two people at once: a marketer submits, an approver sees it appear without
a reload (the live push's ``approval`` kind), decides with a comment, and the marketer's
page shows the decision without a reload. The marketer's page has no approve button,
and the approve it forges anyway is 403; the approver's own click is the witness.

Screenshots land in ``artifacts/console/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aislecast.kernel.broker import MosquittoProcess
from hq.accounts import Accounts
from hq.audit import AuditLog
from hq.server import HqServer
from tests.harness import STORE, until
from tests.test_console import ARTIFACTS, PASSWORD, browser_page
from tests.test_console_editor import hq_with_store, log_in

pytestmark = pytest.mark.timeout(240)

# every live notification the page heard, by kind (the push, not a reload, shows it)
_HEAR = "window.__kinds = []; window.addEventListener('aislecast:live', (e) => __kinds.push(e.detail.kind));"


async def _card(page: Any, cid: str) -> Any:
    card = page.locator(f'#approvals-queue [data-approval="{cid}"]')
    await card.wait_for(timeout=15_000)
    return card


async def _state(page: Any, cid: str, state: str) -> None:
    await page.locator(f'#submissions [data-submission="{cid}"] [data-field="state"]').filter(
        has_text=state).wait_for(timeout=15_000)


async def _forged_approve(page: Any, cid: str) -> tuple[int, str]:
    """The marketer's own session, CSRF token and all, calling approve by hand."""
    got = await page.evaluate("""async (cid) => {
        const r = await fetch(`/api/campaigns/${cid}/approve`, {method: "POST",
            credentials: "same-origin", headers: {"content-type": "application/json",
            "x-csrf-token": csrfToken()}, body: JSON.stringify({comment: "myself"})});
        return [r.status, (await r.json()).reason ?? ""];
    }""", cid)
    return int(got[0]), str(got[1])


@pytest.mark.slow
async def test_marketer_submits_approver_decides_both_see_it_live(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with hq_with_store(broker, tmp_path) as hq, \
            browser_page(tmp_path / "mia") as mia, browser_page(tmp_path / "ann") as ann:
        Accounts(hq.db).add_user("mia", "marketer", password=PASSWORD)
        base = f"http://127.0.0.1:{hq.http_port}"
        for page, name in ((mia, "mia"), (ann, "ann")):
            await log_in(page, base, name)
            await page.locator("#approvals").wait_for(state="visible", timeout=10_000)
            await page.evaluate(_HEAR)
        assert "approve or reject" in str(await ann.locator("#approvals-who").text_content())
        await ann.locator("#approvals-empty").wait_for(state="visible", timeout=10_000)
        cid = await _flash_approved(hq, mia, ann)
        await _campaign_rejected(hq, mia, ann, flash=cid)


async def _flash_approved(hq: HqServer, mia: Any, ann: Any) -> str:
    svc = hq.service
    # the marketer's flash is a proposal: saved as a draft and submitted, nothing sent
    await mia.locator(f'#flash-stores input[value="{STORE}"]').check()
    await mia.get_by_label("Title").fill("Umbrellas -20% while it rains")
    await mia.get_by_label("Message").fill("At the entrance")
    await mia.get_by_label("Valid for (minutes)").fill("30")
    await mia.get_by_role("button", name="Submit flash for approval").click()
    await mia.locator("#notice").filter(has_text="waits for an approver").wait_for(timeout=10_000)
    (flash,) = [c for c in svc.campaigns() if c.scenario == "flash"]
    assert flash.status == "draft"
    await _state(mia, flash.id, "submitted")

    # the approver's page, never reloaded, shows what would go live
    card = await _card(ann, flash.id)
    assert "approval" in await ann.evaluate("window.__kinds")
    assert await card.locator('[data-field="submitted_by"]').text_content() == "user:mia"
    assert await card.locator('[data-field="stores"]').text_content() == STORE
    assert "each offer valid 30 min" in str(await card.locator('[data-field="schedule"]').text_content())
    assert "Umbrellas -20% while it rains — At the entrance" in str(
        await card.locator('[data-creative="flash"]').text_content())
    # the marketer sees the same card with no buttons; the approve forged from that page is 403
    mine = await _card(mia, flash.id)
    assert await mine.locator("button").count() == 0
    assert await card.get_by_role("button", name=f"Approve {flash.name}").count() == 1
    assert await _forged_approve(mia, flash.id) == (403, "wrong_role")
    assert svc.get_campaign(flash.id).status == "draft"
    await mia.screenshot(path=str(ARTIFACTS / "approvals-1-marketer-submitted.png"), full_page=True)
    await ann.screenshot(path=str(ARTIFACTS / "approvals-2-approver-queue.png"), full_page=True)

    # approved with a comment: live at once, and the marketer's page says so unreloaded
    deltas = svc.stats.deltas_published
    await card.get_by_label(f"Comment on {flash.name}").fill("Go, it is pouring")
    await card.get_by_role("button", name=f"Approve {flash.name}").click()
    await ann.locator("#notice").filter(has_text="it is now live").wait_for(timeout=10_000)
    assert svc.get_campaign(flash.id).status == "live"  # the positive witness
    await until(lambda: svc.stats.deltas_published > deltas, timeout=30)  # pushed to the store
    await _state(mia, flash.id, "approved")
    row = mia.locator(f'#submissions [data-submission="{flash.id}"]')
    assert await row.locator('[data-field="decision_comment"]').text_content() == "Go, it is pouring"
    assert await row.locator('[data-field="decided_by"]').text_content() == "user:ann"
    await mia.locator(f'tr[data-campaign="{flash.id}"] [data-field="status"]').filter(
        has_text="live").wait_for(timeout=10_000)
    await ann.locator(f'#approvals-queue [data-approval="{flash.id}"]').wait_for(state="detached")
    await mia.locator(f'#approvals-queue [data-approval="{flash.id}"]').wait_for(state="detached")
    await mia.screenshot(path=str(ARTIFACTS / "approvals-3-marketer-approved.png"), full_page=True)
    entries = AuditLog(hq.db).entries(obj=f"campaign:{flash.id}")
    assert [(e.actor, e.action) for e in entries] == [
        ("user:mia", "campaign.save"), ("user:mia", "approval.submit"), ("user:ann", "approval.approve")]
    assert entries[-1].after["approval"]["decision_comment"] == "Go, it is pouring"
    assert entries[-1].after["campaign"]["status"] == "live"
    return flash.id


async def _campaign_rejected(hq: HqServer, mia: Any, ann: Any, *, flash: str) -> None:
    svc = hq.service
    # the marketer writes a campaign in the editor and submits it from there
    await mia.get_by_label("Id", exact=True).fill("cheese-week")
    await mia.get_by_label("Name", exact=True).fill("Cheese week")
    await mia.get_by_label("Stores (ids, comma separated)").fill(STORE)
    await mia.locator("#ed-creatives-0-title").fill("Every cheese -50%")
    await mia.get_by_role("button", name="Save campaign").click()
    await mia.locator("#editor-status").filter(has_text="Saved").wait_for(timeout=10_000)
    assert svc.get_campaign("cheese-week").status == "draft"
    await mia.get_by_label("Note for the approver").fill("for the cheese fair")
    await mia.get_by_role("button", name="Submit for approval").click()
    await mia.locator("#editor-status").filter(has_text="Submitted").wait_for(timeout=10_000)
    card = await _card(ann, "cheese-week")
    assert await card.locator('[data-field="comment"]').text_content() == "for the cheese fair"
    assert await card.locator('[data-field="target"]').text_content() == "live"

    # a rejection needs a reason; with one, the campaign stays off and the author is told
    await card.get_by_role("button", name="Reject Cheese week").click()
    await ann.locator("#notice").filter(has_text="Say why").wait_for(timeout=10_000)
    await card.get_by_label("Comment on Cheese week").fill("-50% on every cheese is too much")
    await card.get_by_role("button", name="Reject Cheese week").click()
    await ann.locator("#notice").filter(has_text="Rejected").wait_for(timeout=10_000)
    await _state(mia, "cheese-week", "rejected")
    row = mia.locator('#submissions [data-submission="cheese-week"]')
    assert await row.locator('[data-field="decision_comment"]').text_content() == (
        "-50% on every cheese is too much")
    assert svc.get_campaign("cheese-week").status == "draft"
    assert (await mia.locator(f'#submissions [data-submission="{flash}"] [data-field="state"]')
            .text_content()) == "approved"  # the other submission keeps its own state
    await mia.screenshot(path=str(ARTIFACTS / "approvals-4-marketer-rejected.png"), full_page=True)
    actions = [(e.actor, e.action) for e in AuditLog(hq.db).entries(obj="campaign:cheese-week")]
    assert actions == [("user:mia", "campaign.save"), ("user:mia", "approval.submit"),
                       ("user:ann", "approval.reject")]
    # the refused empty reject changed nothing and wrote no entry; the queue is empty again
    await ann.locator("#approvals-empty").wait_for(state="visible", timeout=10_000)


@pytest.mark.slow
async def test_feed_rules_are_listed_added_refused_inline_and_deleted(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """The console's feed-rule control (hq.feeds_api): an approver adds a rule, HQ's 422
    names the field a bad one gets wrong, and deletes it; a marketer only reads them."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with hq_with_store(broker, tmp_path) as hq, \
            browser_page(tmp_path / "ann") as ann, browser_page(tmp_path / "mia") as mia:
        Accounts(hq.db).add_user("mia", "marketer", password=PASSWORD)
        base = f"http://127.0.0.1:{hq.http_port}"
        await log_in(ann, base, "ann")
        await ann.locator("#rules-empty").wait_for(state="visible", timeout=10_000)
        await ann.get_by_label("Rule name").fill("rain")
        await ann.get_by_label("Keywords (comma separated)").fill("rain, umbrella")
        await ann.get_by_label("Languages (empty: all)").fill("en, xx")
        await ann.get_by_label("Proposal headline").fill("Umbrellas -30 %")
        await ann.get_by_label("Proposed for stores (ids)").fill(STORE)
        await ann.get_by_role("button", name="Save rule").click()
        refused = ann.locator("#notice").filter(has_text="Rule not saved")
        await refused.wait_for(timeout=10_000)
        assert "languages[1]" in str(await refused.text_content())
        assert hq.db.query("SELECT name FROM feed_rules") == []  # nothing stored
        await ann.get_by_label("Languages (empty: all)").fill("en, de")
        await ann.get_by_role("button", name="Save rule").click()
        row = ann.locator('#rules tr[data-rule="rain"]')
        await row.wait_for(timeout=10_000)
        assert await row.locator('[data-field="source"]').text_content() == "written here"
        assert await row.locator('[data-field="flash"]').text_content() == f"Umbrellas -30 % → {STORE}"
        await ann.screenshot(path=str(ARTIFACTS / "feedrules-1-added.png"), full_page=True)

        await log_in(mia, base, "mia")  # a marketer: the list, no form, no delete
        await mia.locator('#rules tr[data-rule="rain"]').wait_for(timeout=10_000)
        assert await mia.locator("#rule-form").is_hidden()
        assert await mia.locator('#rules tr[data-rule="rain"] button').count() == 0

        await row.get_by_role("button", name="Delete rule rain").click()
        await ann.locator('#rules tr[data-rule="rain"]').wait_for(state="detached", timeout=10_000)
        await ann.locator("#rules-empty").wait_for(state="visible", timeout=10_000)
