"""Phone feedback survives HQ being away: kept until HQ's ack, resent, stored once."""

from __future__ import annotations

import time
from pathlib import Path

from aislecast.apps.phone import Phone, PhoneBehaviour
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, Event, Offer
from aislecast.kernel.tokens import new_identity_key
from hq.server import HqServer
from tests.harness import until as _until


async def test_feedback_sent_while_hq_is_away_reaches_hq_once(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    mqtt = MqttSettings(port=broker.port)
    offer = Offer(v=SCHEMA_VERSION, id="o1", campaign="c1", variant="a", store="s1",
                  inbox="inbox1", issued_at=time.time(), expires_at=time.time() + 600, title="t")
    async with Phone(mqtt, inbox="inbox1", identity_key=new_identity_key(), rotation_k=9,
                     behaviour=PhoneBehaviour(open_p=0.0)) as phone:
        phone.ack_timeout_s = 0.5
        await phone.link.wait_connected(10)
        await phone.feedback(offer, "opened")  # no HQ subscribed anywhere: the broker drops it
        assert len(phone.unacked) == 1
        async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                            mqtt=mqtt, http_port=0) as hq:
            # the gateway's word that o1 went to inbox1: HQ takes feedback on nothing else
            hq.ingest.store_events([Event(id="pub-o1", kind="offer_published", ts=time.time(),
                                          store="s1", gateway="g1", campaign="c1", offer="o1",
                                          inbox="inbox1")])
            await _until(lambda: not phone.unacked)
            assert phone.stats.feedback_resent >= 1
            assert phone.stats.feedback_acked == 1
            rows = hq.db.query("SELECT kind, inbox FROM events WHERE offer = 'o1'"
                               " AND kind != 'offer_published'")
            assert rows == [("offer_opened", "inbox1")]
            assert hq.ingest.stats.feedback >= 1
