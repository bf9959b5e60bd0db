"""Untrusted bytes on every topic are counted and dropped; nothing crashes, nothing stops."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttLink
from aislecast.kernel.schema import SCHEMA_VERSION, Bundle, Store
from aislecast.kernel.signing import Signer
from edge.simstore import SimShopper
from tests.harness import STORE, enter_campaign, stack
from tests.harness import until as _until

GARBAGE = [b"", b"\x00\xff\xfe", b"{", b"[]", b'{"v":1}', b"null", b"x" * 70_000,
           b'{"v":1,"store":"store-t","gateway":"gw-1","events":[{"id":1}]}']




async def test_garbage_on_every_topic_is_counted_and_the_pipeline_keeps_working(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")]) as st:
        e = st.hq.service.enroll(["offers"], [STORE])
        first = await st.hq.service.publish_bundle(STORE)
        bundle = await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        async with st.phone(e) as phone, MqttLink(st.mqtt, client_id="attacker") as evil:
            await phone.link.wait_connected(10)
            await evil.wait_connected(10)
            targets = [topics.bundle(STORE), topics.bundle_delta(STORE), topics.sightings(STORE, e.inbox),
                       topics.gateway_acks(STORE, "gw-1"), topics.gateway_events(STORE, "gw-1"),
                       topics.feedback(e.inbox), topics.offers(e.inbox)]
            for t in targets:
                for g in GARBAGE:
                    await evil.publish(t, g, qos=1)
            # a forged bundle (another key), a replay of an older one (stale), and the
            # current one again (a redelivery: quietly ignored, not an error)
            forged = Signer(Ed25519PrivateKey.generate()).sign("bundle", msgspec.structs.replace(
                bundle, version=bundle.version + 5))
            await evil.publish(topics.bundle(STORE), forged, qos=1)
            await evil.publish(topics.bundle(STORE), st.hq.service.signer.sign("bundle", first), qos=1)
            await evil.publish(topics.bundle(STORE), st.hq.service.signer.sign("bundle", bundle), qos=1)
            # an expired bundle, genuinely signed
            old = Bundle(v=SCHEMA_VERSION, version=bundle.version + 9, store=Store(STORE, "x"),
                         issued_at=1.0, expires_at=2.0, zones=[], beacons=[], campaigns=[],
                         rotation_k=9, token_tables=[])
            await evil.publish(topics.bundle(STORE), st.hq.service.signer.sign("bundle", old), qos=1)
            await _until(lambda: sum(gw.parts.bundles.rejected.values()) >= 2 * len(GARBAGE) + 3)
            await _until(lambda: phone.stats.bad_payloads >= len(GARBAGE))
            await _until(lambda: sum(st.hq.ingest.stats.bad_payloads.values()) >= 2 * len(GARBAGE))
            assert gw.parts.bundles.rejected["unknown_key"] >= 1  # another key
            assert gw.parts.bundles.rejected["stale"] >= 1
            assert gw.parts.bundles.rejected["expired"] >= 1
            assert gw.parts.bundles.version == bundle.version  # the good bundle is still in force
            assert gw.parts.bundles.redelivered >= 1
            assert gw.parts.counters.bad_payloads.get("sighting", 0) >= len(GARBAGE) - 1
            assert phone.stats.offers_received == 0
            # ... and everything still works: the shopper walks in and gets the offer
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 1.0), ("produce", 3.0)],
                                          start=time.monotonic(), speed_mps=5.0))
            await _until(lambda: phone.stats.offers_received == 1)
            await _until(lambda: st.hq.ingest.stats.by_kind.get("offer_published", 0) >= 1)
            assert st.hq.link.stats.handler_errors == 0
            assert gw.link.stats.handler_errors == 0
