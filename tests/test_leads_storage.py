"""The leads table on SQLite and PostgreSQL: a lead feedback over a real broker is
acked, stored once (a resend adds nothing), counted in the rollups, exported and
erased with the shopper."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aislecast.apps.phone import Phone, PhoneBehaviour
from aislecast.apps.scenarios import setup_store
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import Campaign, Creative, FormField, Trigger
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, Event, Offer
from edge.simstore import STORE_UUID, default_zones
from hq.funnel import funnel
from hq.server import HqServer
from tests.conftest_pg import BACKENDS, hq_url
from tests.harness import bearer, token_for


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with hq_url(request.param, tmp_path) as url:
        yield url


async def test_a_lead_is_stored_once_counted_and_erased(broker: MosquittoProcess, db_url: str,
                                                         tmp_path: Path) -> None:
    mqtt = MqttSettings(port=broker.port)
    async with HqServer(db_url=db_url, key_path=tmp_path / "hq.pem", mqtt=mqtt,
                        http_port=0) as hq:
        setup_store(hq.service, "s1", default_zones(), STORE_UUID)
        hq.service.upsert_campaign(Campaign(
            id="launch", name="Register for the launch", stores=["s1"],
            trigger=Trigger(kind="enter"),
            creatives=[Creative(id="a", title="Launch night", format="lead",
                                form=[FormField(name="email", label="Email", required=True),
                                      FormField(name="consent_contact", label="Contact me")])]))
        e = hq.service.enroll(["offers"], ["s1"])
        now = time.time()
        hq.ingest.store_events([Event(id="pub-o1", kind="offer_published", ts=now, store="s1",
                                      gateway="g1", campaign="launch", variant="a", offer="o1",
                                      inbox=e.inbox)])
        offer = Offer(v=SCHEMA_VERSION, id="o1", campaign="launch", variant="a", store="s1",
                      inbox=e.inbox, issued_at=now, expires_at=now + 600, title="t")
        async with Phone(mqtt, inbox=e.inbox, identity_key=bytes.fromhex(e.identity_key),
                         rotation_k=e.rotation_k, behaviour=PhoneBehaviour(open_p=0.0)) as phone:
            await phone.link.wait_connected(10)
            for _ in range(2):  # the second is a resend under a new id: the same lead
                fid = await phone.feedback(offer, "lead", {"email": "b@example.org",
                                                           "consent_contact": "yes"})
                await phone.wait_acked(fid)
        assert phone.stats.feedback_acked == 2
        assert hq.db.query("SELECT offer, inbox, fields FROM leads") == [
            ("o1", e.inbox, '{"email":"b@example.org","consent_contact":"yes"}')]
        assert funnel(hq.db, "launch")[0].leads == 1
        admin = bearer(token_for(hq.db, "admin"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}",
                                     headers=admin) as http:
            r = await http.get(f"/api/shoppers/{e.inbox}/export")
            assert r.json()["leads"][0]["fields"]["email"] == "b@example.org"
            assert (await http.delete(f"/api/shoppers/{e.inbox}")).status_code == 200
        assert hq.db.query("SELECT count(*) FROM leads") == [(0,)]
        assert hq.db.query("SELECT count(*) FROM events WHERE kind = 'lead_submitted'") == [(1,)]
