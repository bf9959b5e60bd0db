"""Leads end to end: a lead creative offered by a real gateway, the phone submits the
form as feedback, HQ acks it, stores the row (not in the event), counts it in the
funnel, exports and erases it; a bad form is refused 422 naming the field."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aislecast.apps.cmd_phone_lead import parse_fields, submit
from aislecast.apps.phone import Phone
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import Campaign, Caps, Creative, FormField, Trigger
from aislecast.kernel.errors import ConfigError
from edge.simstore import SimShopper
from hq.funnel import funnel
from hq.lead_score import lead_score_of
from hq.learning import train
from hq.service import Enrollment
from tests.harness import STORE, Stack, bearer, stack, until

_until = functools.partial(until, timeout=20.0)
CID = "tasting"
FORM = [FormField(name="name", label="Your name", required=True),
        FormField(name="email", label="Email"), FormField(name="party_size", label="Guests")]


def _campaign() -> Campaign:
    return Campaign(id=CID, name="Book a tasting", stores=[STORE],
                    trigger=Trigger(kind="enter", zones=["produce"]), validity_s=600,
                    creatives=[Creative(id="a", title="Book a tasting", format="lead",
                                        cta="Book", form=FORM)],
                    caps=Caps(per_shopper=1))


def _enrollment(e: dict[str, Any]) -> Enrollment:
    return Enrollment(e["inbox"], e["identity_key"], e["rotation_k"], e["consents"],
                      broker_username=e["broker_username"], broker_password=e["broker_password"])


@contextlib.asynccontextmanager
async def offered(st: Stack, consents: list[str], *, timeout: float
                  ) -> AsyncIterator[tuple[dict[str, Any], Enrollment, Phone, Any]]:
    """A shopper enrolled through the API with ``consents``, the store's gateway started,
    and their phone walked to the produce aisle until an offer reached it: (the enrolment
    answer, the enrolment, the connected phone, its first offer)."""
    async with httpx.AsyncClient(base_url=st.url, headers=bearer(st.token("wallet"))) as http:
        r = await http.post("/api/enroll", json={"consents": consents, "home_stores": [STORE]})
        assert r.status_code == 201, r.text
    e = r.json()
    enr = _enrollment(e)
    await st.hq.service.publish_bundle(STORE)
    await st.start_gateway("gw-1")
    got: list[Any] = []
    async with st.phone(enr, on_offer=got.append) as phone:
        await phone.link.wait_connected(10)
        st.sim.add_shopper(SimShopper(enr.inbox, phone.token, [("produce", 6.0)],
                                      start=time.monotonic()))
        await until(lambda: got, timeout=timeout)
        yield e, enr, phone, got[0]


@pytest.mark.xdist_group("realtime")
async def test_a_lead_is_offered_submitted_acked_stored_counted_exported_and_erased(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [_campaign()]) as st:
        async with offered(st, ["offers", "personalisation", "analytics"],
                           timeout=20.0) as (e, enr, phone, offer):
            assert offer.format == "lead" and [f.name for f in offer.form] == \
                ["name", "email", "party_size"]
            # the CLI's code path: publish, wait for HQ's ack
            args = argparse.Namespace(offer=offer.id, campaign=CID, store=STORE, wait=20.0)
            fields = parse_fields(["name=Ana", "email=ana@example.org", "party_size=2"])
            assert await submit(phone, args, fields)
            # a field the form does not name: acknowledged (the phone stops) but refused
            bad = await phone.feedback(offer, "lead", {"name": "Eve", "phone": "+44 1"})
            await _until(lambda: bad not in phone.unacked)
            assert st.hq.ingest.stats.feedback_refused.get("lead_form_invalid") == 1
        rows = st.hq.db.query("SELECT campaign, store, inbox, fields FROM leads")
        assert [(c, s, i, json.loads(f)) for c, s, i, f in rows] == [
            (CID, STORE, enr.inbox, {"name": "Ana", "email": "ana@example.org", "party_size": "2"})]
        ev = st.hq.db.query("SELECT body FROM events WHERE kind = 'lead_submitted'")
        assert len(ev) == 1 and "ana@example.org" not in ev[0][0]
        total = funnel(st.hq.db, CID)[0]
        assert total.leads == 1 and total.impressions == 1
        assert lead_score_of(st.hq.db, enr.inbox) > 0.5
        # the learner's profile (which rides in the bundle to the ranking) has it too
        assert train(st.hq.service).profiles[enr.inbox].lead == lead_score_of(st.hq.db, enr.inbox)
        async with httpx.AsyncClient(base_url=st.url, headers=st.admin) as admin:
            r = await admin.get(f"/api/campaigns/{CID}/leads")
            assert r.status_code == 200 and r.json()["leads"][0]["fields"]["name"] == "Ana"
            r = await admin.get(f"/api/campaigns/{CID}/leads", params={"format": "csv"})
            assert r.text.splitlines()[0] == "id,ts,store,offer,inbox,email,name,party_size"
            assert (await admin.get("/api/campaigns/nope/leads")).status_code == 404
            stats = (await admin.get(f"/api/analytics/campaigns/{CID}")).json()
            assert (stats[0] if isinstance(stats, list) else stats)["leads"] == 1
        audits = st.hq.db.query("SELECT actor FROM audit WHERE action = 'leads.read'")
        assert len(audits) == 2  # the JSON and the CSV read; the 404 read nothing
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(st.token("analyst"))) as an:
            assert (await an.get(f"/api/campaigns/{CID}/leads")).status_code == 403
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(e["api_token"])) as me:
            exp = (await me.get(f"/api/shoppers/{enr.inbox}/export")).json()
            assert exp["leads"][0]["fields"]["email"] == "ana@example.org"
            assert exp["lead_score"] > 0.5
            r = await me.delete(f"/api/shoppers/{enr.inbox}")
            assert r.status_code == 200, r.text
        assert st.hq.db.query("SELECT count(*) FROM leads") == [(0,)]
        assert funnel(st.hq.db, CID)[0].leads == 1  # counted anonymously still


async def test_a_bad_lead_form_is_refused_422_naming_the_field(broker: MosquittoProcess,
                                                              tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, []) as st, \
            httpx.AsyncClient(base_url=st.url, headers=st.admin) as admin:
        body = json.loads(json.dumps({"id": "bad", "name": "x", "stores": [STORE],
                                      "creatives": [{"id": "a", "title": "t", "format": "lead",
                                                     "form": [{"name": "ssn"}]}]}))
        r = await admin.post("/api/campaigns", json=body)
        assert r.status_code == 422
        assert any("creatives[a].form[0].name" in p for p in r.json()["detail"]), r.text
        body["creatives"][0]["form"] = []
        r = await admin.post("/api/campaigns", json=body)
        assert r.status_code == 422 and "1 to 6 fields" in r.text
        body["creatives"][0]["form"] = [{"name": "name", "label": "L" * 81}]
        r = await admin.post("/api/campaigns", json=body)
        assert r.status_code == 422 and "form[0].label" in r.text
        body["creatives"][0]["form"] = [{"name": "name", "label": "Name"}]
        r = await admin.post("/api/campaigns", json=body)
        assert r.status_code == 201, r.text


def test_the_cli_refuses_unknown_and_long_fields() -> None:
    with pytest.raises(ConfigError, match="not a known field"):
        parse_fields(["ssn=1"])
    with pytest.raises(ConfigError, match="at most 200"):
        parse_fields(["name=" + "x" * 201])
    assert parse_fields(["name=Ana=B"]) == {"name": "Ana=B"}


def test_phone_lead_refuses_a_bad_field_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from aislecast.apps.cli import main  # noqa: PLC0415 - the program's entry point
    rc = main(["phone", "lead", "--me", "/nonexistent", "--offer", "o", "--campaign", "c",
               "--store", "s", "--field", "ssn=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("aislecast: error: --field: 'ssn=1' is not a known field")
    assert "\n" not in err and "Traceback" not in err
