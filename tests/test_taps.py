"""Taps and scans end to end on a private Mosquitto (tests/harness.py stack): the gateway's
emulated NFC reader, the app's interaction reports, HQ's short links, a reader that is gone,
and hostile reports."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aislecast.apps.phone import Phone
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    Campaign,
    Creative,
    InteractionReport,
    Trigger,
    TriggerKind,
    encode,
)
from edge.nfc import AISLECAST_AID
from edge.nfc.emulator import CardEmulator, IsoDepCard, free_udp_port
from edge.simstore import SimShopper
from gateway.app import Gateway
from hq.analytics import campaign_stats
from hq.consent import PURPOSES
from hq.funnel import funnel
from tests.harness import STORE, Stack, enter_campaign, stack, until
from tests.nfc.nfc_helpers import CARD_WAIT_S

_until = functools.partial(until, timeout=10.0)


def _campaign(cid: str, kind: TriggerKind, *, tags: list[str] | None = None,
              zones: list[str] | None = None) -> Campaign:
    return Campaign(id=cid, name=cid, stores=[STORE], validity_s=600,
                    trigger=Trigger(kind=kind, tags=tags or [], zones=zones or []),
                    creatives=[Creative(id="a", title=f"{cid} deal")])


def _report(phone: Phone, kind: str, tag: str, **kw: Any) -> bytes:
    return encode(InteractionReport(v=SCHEMA_VERSION, id=uuid.uuid4().hex, kind=kind,  # type: ignore[arg-type]
                                    token=phone.token().hex(), tag=tag, ts=time.time(), **kw))


def _http(st: Stack, method: str, path: str, body: dict[str, Any] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    req = urllib.request.Request(f"http://127.0.0.1:{st.hq.http_port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers=st.admin)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=5) as rsp:
            return rsp.status, dict(rsp.headers), rsp.read()
    except urllib.error.HTTPError as exc:  # 3xx/4xx land here without a redirect handler
        return exc.code, dict(exc.headers), exc.read()


def _presentations(gw: Gateway) -> int:
    """Card presentations the gateway's reader has handled, whatever came of them."""
    assert gw.parts.taps.reader is not None
    s = gw.parts.taps.reader.stats()
    return sum(int(s.get(k) or 0) for k in ("taps", "repeats", "read_failed", "no_ndef",
                                             "bad_token", "bad_ndef", "bad_record"))


async def test_phone_tap_on_the_gateway_reader_gives_exactly_one_offer(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    port = free_udp_port()
    async with stack(broker.port, tmp_path, [_campaign("till-tap", "tap", zones=["checkout"])]) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        other = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway(nfc={"device": f"udp:127.0.0.1:{port}", "zone": "checkout",
                                         "repeat_holdoff_s": 5.0})
        async with st.phone(e) as phone, st.phone(other) as bystander:
            await asyncio.gather(phone.link.wait_connected(10), bystander.link.wait_connected(10))
            card = IsoDepCard(token=phone.token, aid=AISLECAST_AID)
            # the shopper holds the phone to the reader: three presentations, one tap
            with CardEmulator(port, card, presentations=3, gap_s=0.05, timeout=CARD_WAIT_S) as emu:
                assert await asyncio.to_thread(emu.wait_sessions, 3, 10.0), emu.error
            await _until(lambda: phone.stats.offers_received >= 1)
            # the witness: the reader handled all three presentations (one tap, repeats
            # inside the holdoff, or a read that failed), so no further tap can come
            await _until(lambda: _presentations(gw) >= 3)
            assert phone.stats.offers_received == 1
            assert bystander.stats.offers_received == 0
            offer = next(iter(phone.offers.values()))
            assert (offer.campaign, offer.zone) == ("till-tap", "checkout")
            assert gw.parts.taps.stats["reader_taps"] == 1
            assert gw.metrics()["taps_reader_up"] == 1.0
            await _until(lambda: st.hq.ingest.stats.by_kind.get("tap", 0) >= 1)
            rows = st.hq.db.query("SELECT reason, body FROM events WHERE kind = 'tap' AND inbox = ?",
                                  (e.inbox,))
            assert [r[0] for r in rows] == ["tap"]
            assert json.loads(rows[0][1])["detail"]["source"] == "nfc_reader"


async def test_shelf_tag_tap_reported_by_the_app_gives_the_products_offer(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    campaigns = [_campaign("milk-tap", "tap", tags=["milk-1l"]),
                 _campaign("other-tap", "tap", tags=["tag-elsewhere"])]
    async with stack(broker.port, tmp_path, campaigns) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway(nfc={"tags": {"T-17": {"zone": "dairy", "product": "milk-1l"}}})
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            await phone.link.publish(topics.interactions(STORE, phone.inbox),
                                     _report(phone, "tap", "T-17"), qos=1)
            await _until(lambda: phone.stats.offers_received >= 1)
            offer = next(iter(phone.offers.values()))
            assert (offer.campaign, offer.zone) == ("milk-tap", "dairy")
            # the same report delivered twice (QoS 1) is one interaction
            payload = _report(phone, "tap", "T-99", product="milk-1l", zone="bakery")
            for _ in range(2):
                await phone.link.publish(topics.interactions(STORE, phone.inbox), payload, qos=1)
            await _until(lambda: gw.parts.taps.stats["report_duplicates"] >= 1)
            assert gw.parts.taps.stats["report_taps"] == 2
            await _until(lambda: st.hq.ingest.stats.by_kind.get("tap", 0) >= 2)
            rows = st.hq.db.query("SELECT zone, body FROM events WHERE kind = 'tap' ORDER BY ts")
            details = [json.loads(r[1])["detail"] for r in rows]
            assert [d["tag"] for d in details] == ["T-17", "T-99"]
            assert {d["source"] for d in details} == {"nfc"}
            assert [r[0] for r in rows] == ["dairy", "bakery"]  # map wins; else the tag's record


async def test_qr_scan_via_hq_short_link_is_recorded_and_decided(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [_campaign("coffee-scan", "scan", tags=["T-5"])]) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        body = {"url": "https://shop.example/coffee", "tag": "T-5", "store": STORE,
                "campaign": "coffee-scan"}
        status, _, raw = await asyncio.to_thread(_http, st, "POST", "/api/shortlinks", body)
        assert status == 201, raw
        link = json.loads(raw)
        again = await asyncio.to_thread(_http, st, "POST", "/api/shortlinks", body)
        assert again[0] == 200 and json.loads(again[2])["code"] == link["code"]  # reused
        assert link["qr"].endswith(f"/s/{link['code']}?src=qr&t=T-5")
        # the shopper scans the label with the camera: HQ counts it and redirects
        path = link["qr"].split(str(st.hq.http_port), 1)[1]
        status, headers, _ = await asyncio.to_thread(_http, st, "GET", path)
        assert status == 302 and headers["location"] == "https://shop.example/coffee"
        nfc_path = link["nfc"].split(str(st.hq.http_port), 1)[1]
        assert (await asyncio.to_thread(_http, st, "GET", nfc_path))[0] == 302
        stats = json.loads((await asyncio.to_thread(_http, st, "GET",
                                                    f"/api/shortlinks/{link['code']}"))[2])
        assert stats["clicks"] == {"qr": 1, "nfc": 1}
        rows = st.hq.db.query("SELECT reason, store FROM events WHERE kind = 'tap' ORDER BY ts")
        assert rows == [("scan", STORE), ("tap", STORE)]
        # ... and the app reports the scan to the store: a `scan` decision, an offer
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            await phone.link.publish(topics.interactions(STORE, phone.inbox),
                                     _report(phone, "scan", "T-5", code=link["code"]), qos=1)
            await _until(lambda: phone.stats.offers_received >= 1)
            assert next(iter(phone.offers.values())).campaign == "coffee-scan"
            assert gw.parts.taps.stats["report_scans"] == 1
            # HQ's funnel (hq.rollups): both QR scans (the label's, and the app's report
            # naming the link's code) and the NFC tap count for the link's campaign, and
            # the decision and its publication under the trigger "scan"
            await _until(lambda: st.hq.ingest.stats.by_kind.get("offer_published", 0) >= 1)
            [s] = campaign_stats(st.hq.db, "coffee-scan")
            assert (s.scans, s.taps, s.offered, s.impressions) == (2, 1, 1, 1)
            by_trigger = {r.key: r for r in funnel(st.hq.db, "coffee-scan", by="trigger")}
            assert by_trigger["scan"].offered == by_trigger["scan"].impressions == 1


async def test_a_reader_that_is_gone_does_not_disturb_ble_presence(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")]) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        # no such USB reader on this machine: open fails, is retried with backoff
        gw = await st.start_gateway(nfc={"device": "usb:ffff:fffe", "zone": "checkout"})
        task = st.gateways[-1][1]
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 1.0), ("produce", 5.0)],
                                          start=time.monotonic(), speed_mps=5.0))
            await _until(lambda: phone.stats.offers_received >= 1, timeout=15)
            assert gw.parts.triggers.stats.presence_events > 0
            assert not task.done()
            reader = gw.parts.taps.reader
            assert reader is not None and reader.stats()["open_failures"] != 0
            assert reader.stats()["state"] == "waiting_for_device"
            assert gw.metrics()["taps_reader_up"] == 0.0


async def test_hostile_interaction_reports_are_counted_and_dropped(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [_campaign("any-tap", "tap")]) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            good = json.loads(_report(phone, "tap", "T-1"))

            def variant(**kw: Any) -> bytes:  # each its own id, so no dedupe hides one
                return json.dumps(good | {"id": uuid.uuid4().hex} | kw).encode()

            hostile: list[bytes] = [
                b"", b"not json", b"[]", b"\xff\xfe", b'{"v":1}', b"{" * 10_000,
                variant(pad="x" * 5000),          # oversized
                variant(v=99),                    # unknown version
                variant(kind="enter"),            # not tap/scan
                variant(token="zz" * 8),          # not hex
                variant(token="00" * 64),         # wrong length
                variant(tag="a b"),               # space in tag
                variant(tag="t" * 65),            # too long
                variant(product="\x00milk"),      # control character
                variant(id="../../x"),            # bad id
                variant(ts=time.time() - 3600),   # replayed
                variant(ts="now"),                # wrong type
                variant(token="0123456789abcdef"),  # noqa: S106 - nobody's token
            ]
            for payload in hostile:
                await phone.link.publish(topics.interactions(STORE, phone.inbox), payload, qos=1)
            await _until(lambda: sum(v for k, v in gw.parts.counters.bad_payloads.items()
                                     if k.startswith("interaction")) >= len(hostile))
            bad = gw.parts.counters.bad_payloads
            assert bad["interaction_stale"] == 1 and bad["interaction_unresolved"] == 1
            assert gw.link.stats.handler_errors == 0
            assert gw.parts.recorder.stats.decisions == 0  # every one was refused, none decided
            # the gateway is fine: a good report still works, and its offer, published after
            # anything the hostile ones could have caused, arrives alone
            await phone.link.publish(topics.interactions(STORE, phone.inbox),
                                     _report(phone, "tap", "T-1"), qos=1)
            await _until(lambda: phone.stats.offers_received >= 1)
            assert phone.stats.offers_received == 1 and gw.parts.recorder.stats.decisions == 1


async def test_a_report_with_another_shoppers_token_is_refused(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    """The topic names the sender (the ACL pins it to its username): a phone, or a gateway
    with stolen credentials, cannot act for a shopper whose token it replays."""
    async with stack(broker.port, tmp_path, [_campaign("any-tap", "tap")]) as st:
        a, b = st.hq.service.enroll(list(PURPOSES), [STORE]), st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        async with st.phone(a) as pa, st.phone(b) as pb:
            await pa.link.wait_connected(10)
            await pb.link.wait_connected(10)
            await pa.link.publish(topics.interactions(STORE, pa.inbox), _report(pb, "tap", "T-1"),
                                  qos=1)
            # the witness: the report was read and refused; a refused report is not decided
            await _until(lambda: gw.parts.counters.bad_payloads.get("interaction_sender", 0) == 1)
            assert gw.parts.recorder.stats.decisions == 0
            assert pa.stats.offers_received == pb.stats.offers_received == 0
