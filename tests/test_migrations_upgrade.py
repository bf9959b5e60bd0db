"""A store upgraded in place: today's HQ and gateway processes start on the databases
that fe58505's code wrote (tests/fixtures/v1), on a real broker, and carry on.

The gateway's outbox (written before migrations existed) still delivers: its event rows
reach HQ, which stores them beside the old events and acknowledges them; its offers
that are still valid reach the shoppers' inboxes; the ones that expired since are
dropped, never published. The persisted bundle and the paused campaign hold.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.schema import Offer, decode
from tests.harness import stack, until

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
FACTS = json.loads((FIXTURES / "facts.json").read_text())


async def test_old_store_databases_upgrade_and_deliver(broker: MosquittoProcess,
                                                       tmp_path: Path) -> None:
    gw_facts, hq_facts = FACTS["gateway"], FACTS["hq"]
    name, store = gw_facts["gateway"], hq_facts["store"]
    shutil.copy(FIXTURES / "hq-v1.sqlite", tmp_path / "hq.sqlite")  # where the stack's HQ opens
    (tmp_path / name).mkdir()
    shutil.copy(FIXTURES / "gateway-v1.sqlite", tmp_path / name / f"gateway-{name}.sqlite")
    received: list[Offer] = []

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="shoppers-upgrade",
                              protocol=aiomqtt.ProtocolVersion.V5) as shoppers:
        await shoppers.subscribe(topics.offers("+"), qos=1)

        async def collect() -> None:
            async for msg in shoppers.messages:
                assert isinstance(msg.payload, bytes)
                received.append(decode(msg.payload, Offer))

        reader = asyncio.create_task(collect())
        try:
            async with stack(broker.port, tmp_path, []) as st:
                hq = st.hq
                old_events = hq.db.one("SELECT count(*) FROM events")
                assert old_events == (hq_facts["events"],)  # HQ opened the old file, rows intact
                gw = await st.start_gateway(
                    name, store=store,
                    hq_public_key=(FIXTURES / "hq-v1.pub.pem").read_text())
                assert gw.parts.bundles.version == gw_facts["bundle_version"]
                assert gw.parts.bundles.delta_seq == gw_facts["delta_seq"]

                ids = gw_facts["events"]
                marks = ", ".join("?" * len(ids))
                sql = f"SELECT count(*) FROM events WHERE id IN ({marks})"  # noqa: S608

                def delivered() -> bool:
                    row = hq.db.one(sql, ids)
                    return row is not None and row[0] == len(ids)

                await until(delivered)
                await until(lambda: len(received) >= len(gw_facts["long_offers"]))
                await until(lambda: not gw.parts.outbox.pending("event", limit=100))
                assert sorted(o.id for o in received) == gw_facts["long_offers"]
                assert gw.parts.outbox.pending("offer", limit=100) == []
                assert gw.parts.publisher.stats.offers_expired == (
                    len(gw_facts["offers"]) - len(gw_facts["long_offers"]))
                r = hq.service.get_campaign("c-produce")
                assert r.stores == [store]
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
