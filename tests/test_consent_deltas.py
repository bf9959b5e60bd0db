"""Enrolment, consent changes and erasure reach real gateways as signed deltas (gateway.consent)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from edge.simstore import SimShopper
from gateway.app import Gateway
from hq.broker_auth import try_login, wait_for_login
from hq.service import Enrollment
from tests.harness import STORE, authenticated_stack, bearer, enter_campaign, stack, until

_until = functools.partial(until, timeout=15.0)


def _rows_naming(gw: Gateway, inbox: str) -> dict[str, int]:
    """Rows of every table of the gateway's SQLite file with ``inbox`` in a column (the
    signed bundle and delta envelopes are base64 inside: see gateway.consent)."""
    path = Path(gw.parts.cfg.data_dir) / f"gateway-{gw.parts.cfg.gateway}.sqlite"
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {}
        for t in tables:
            n = sum(inbox in repr(row) for row in conn.execute(f'SELECT * FROM "{t}"'))  # noqa: S608
            if n:
                found[t] = n
        return found
    finally:
        conn.close()


def _cap_rows(gw: Gateway, inbox: str) -> int:
    """Cap rows about ``inbox``: by its day pseudonyms and lifetime pseudonyms (no row
    holds the inbox itself: gateway.pseudonyms)."""
    ledger = gw.parts.decider.ledger
    ids = ledger.ps.ids(inbox)
    days = [p for p in (ids.today, ids.yesterday) if p is not None]
    db = gw.parts.db
    n = sum(db.execute("SELECT count(*) FROM cap_charges WHERE shopper = ?", (p,)).fetchone()[0]
            for p in days)
    for (c,) in db.execute("SELECT DISTINCT campaign FROM cap_lifetime").fetchall():
        n += db.execute("SELECT count(*) FROM cap_lifetime WHERE campaign = ? AND shopper = ?",
                        (c, ledger.ps.lifetime(inbox, c))).fetchone()[0]
    return int(n)


def _resolves(gw: Gateway, token: str) -> str | None:
    return gw.parts.identity.resolve(token, time.time())


def _enrollment(e: dict[str, Any]) -> Enrollment:
    return Enrollment(e["inbox"], e["identity_key"], e["rotation_k"], e["consents"],
                      broker_username=e["broker_username"], broker_password=e["broker_password"])


@pytest.mark.xdist_group("realtime")
async def test_enrolment_reaches_the_gateway_without_a_bundle(broker: MosquittoProcess,
                                                             tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce", cap=5)]) as st:
        await st.hq.service.publish_bundle(STORE)
        old = st.hq.service.build_bundle(STORE)  # built before the enrolment, sent after it
        gw = await st.start_gateway("gw-1")
        bundles = st.hq.service.stats.bundles_published
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(st.token("wallet"))) as http:
            r = await http.post("/api/enroll", json={"consents": ["offers"], "home_stores": [STORE]})
            assert r.status_code == 201, r.text
        e = r.json()
        enr = _enrollment(e)
        token = st.phone(enr).token().hex()
        await _until(lambda: _resolves(gw, token) == enr.inbox)
        assert st.hq.service.stats.bundles_published == bundles  # the delta, not a bundle
        # the bundle built before the enrolment arrives late: the shopper does not flap
        applied = gw.parts.bundles.version
        await st.hq.link.publish(topics.bundle(STORE), st.hq.service.signer.sign("bundle", old),
                                 qos=1, retain=True)
        await _until(lambda: gw.parts.bundles.version > applied)
        assert gw.parts.consent.stats.reapplied >= 1
        assert _resolves(gw, token) == enr.inbox
        # withdrawing offers: gone in seconds; granting again: back, without a bundle
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(e["api_token"])) as me:
            r = await me.post(f"/api/shoppers/{enr.inbox}/consent",
                              json={"purpose": "offers", "granted": False})
            assert r.status_code == 200 and r.json()["unpublished_stores"] == []
            await _until(lambda: _resolves(gw, token) is None)
            await me.post(f"/api/shoppers/{enr.inbox}/consent",
                          json={"purpose": "offers", "granted": True})
            await _until(lambda: _resolves(gw, token) == enr.inbox)
        # the next full bundle agrees with the deltas
        await st.hq.service.publish_bundle(STORE)
        applied = gw.parts.bundles.version
        await _until(lambda: gw.parts.bundles.version >= applied)
        assert _resolves(gw, token) == enr.inbox


@pytest.mark.xdist_group("realtime")
async def test_erasure_purges_the_gateway_and_the_broker_login(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, [enter_campaign("produce", cap=5)]) as st:
        wallet = bearer(st.token("wallet"))
        async with httpx.AsyncClient(base_url=st.url, headers=wallet) as http:
            e = (await http.post("/api/shoppers", json={"home_stores": [STORE]})).json()
        enr = _enrollment(e)
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway("gw-1")
        async with st.phone(enr) as phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(enr.inbox, phone.token, [("produce", 6.0)],
                                          start=time.monotonic()))
            await _until(lambda: phone.stats.offers_received >= 1)
        # the witnesses: this gateway holds rows about the shopper (charges, events, visit)
        gw.parts.recorder.flush()
        before = _rows_naming(gw, enr.inbox)
        caps_before = _cap_rows(gw, enr.inbox)
        assert caps_before >= 2 and "cap_charges" not in before, before  # a charge, a count
        assert enr.broker_password
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(e["api_token"])) as me:
            r = await me.delete(f"/api/shoppers/{enr.inbox}")
            assert r.status_code == 200 and r.json()["unpublished_stores"] == [], r.text
        await _until(lambda: gw.parts.consent.stats.erased == 1)
        purged = gw.parts.consent.stats.last_purge
        assert purged.cap_charges == caps_before
        gw.parts.recorder.flush()
        assert _rows_naming(gw, enr.inbox) == {} and _cap_rows(gw, enr.inbox) == 0
        assert _resolves(gw, phone.token().hex()) is None
        assert enr.inbox not in gw.parts.presence.present()
        # the broker refuses the erased login once HQ rendered its files again
        assert st.hq.broker_sync is not None
        await st.hq.broker_sync.flush()
        async with asyncio.timeout(10):
            while await try_login("127.0.0.1", st.mqtt.port, enr.inbox, enr.broker_password):
                await asyncio.sleep(0.05)
        # ... while a shopper enrolled now logs in: the broker was reloaded, not broken
        fresh = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.broker_sync.flush()
        await wait_for_login("127.0.0.1", st.mqtt.port, fresh.inbox, fresh.broker_password or "")
