"""A round of bundles for many stores (hq.bundle_round, HqService.republish_all): the
same bundles as one store at a time, from one read of the chain, published with a
bounded number awaiting acknowledgement; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from aislecast.kernel import topics
from aislecast.kernel.campaign import Model, Profile
from aislecast.kernel.schema import Beacon, Bundle, Campaign, Creative, Store, Trigger, Zone, decode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.verify import Verifier
from hq.bundle_round import read_round
from hq.db import HqDb
from hq.scope import SeenBook
from hq.service import HqService

NOW = 1_800_000_000.0
STORES = [f"s{i}" for i in range(7)]


def _chain(db: HqDb, tmp_path: Path) -> HqService:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s in STORES:
        svc.upsert_store(Store(s, f"Store {s}"))
        svc.upsert_zone(s, Zone(id="entrance", name="Entrance"))
        svc.upsert_beacon(s, Beacon(id=f"b-{s}", zone="entrance", uuid="0" * 32, major=1, minor=1))
    svc.upsert_campaign(Campaign(id="c", name="c", stores=STORES[:3],
                                 trigger=Trigger(kind="enter", zones=["entrance"]),
                                 creatives=[Creative(id="a", title="Deal")]))
    inboxes = [svc.enroll(["offers", "personalisation"], [STORES[i % 5]]).inbox for i in range(20)]
    SeenBook(db).seen(inboxes[0], STORES[6], NOW - 60.0, now=NOW)  # a visitor, no home there
    svc.credentials.issue_gateway(STORES[1], "gw-1")
    db.execute("UPDATE shoppers SET opted_out = 1 WHERE inbox = ?", (inboxes[1],))
    svc.model = Model(weights=[0.1], profiles={i: Profile(segments=["x"], visits=n)
                                               for n, i in enumerate(inboxes)})
    return svc


def _same(a: Bundle, b: Bundle) -> dict[str, object]:
    """``a`` and ``b`` as JSON, without what each build makes anew (version, times)."""
    keep = ("version", "issued_at", "expires_at")
    one, two = (msgspec.to_builtins(msgspec.structs.replace(x, **dict.fromkeys(keep, 0)))
                for x in (a, b))
    assert one == two
    return one  # type: ignore[no-any-return]


def test_a_round_builds_the_bundles_one_store_at_a_time_would(db: HqDb, tmp_path: Path) -> None:
    svc = _chain(db, tmp_path)
    chain = read_round(db, svc.credentials, [*STORES, "nope"], NOW, svc.campaigns())
    assert set(chain.parts) == set(STORES)  # a store HQ does not have is left out
    for s in STORES:
        alone = svc.build_bundle(s, now=NOW)
        together = svc.build_bundle(s, now=NOW, chain=chain)
        assert together.version == chain.parts[s].version
        body = _same(alone, together)
        if s == STORES[1]:  # the witnesses that there is something to compare
            assert body["gateways"] == ["gw-1"] and body["opt_outs"]
            assert body["campaigns"] and body["zones"] and body["beacons"]
    visitor = svc.build_bundle(STORES[6], now=NOW, chain=chain)
    assert {i for t in visitor.token_tables for i in t.tokens.values()} == set(visitor.model.profiles)  # type: ignore[union-attr]
    assert len(visitor.model.profiles) == 1  # type: ignore[union-attr]


class _Link:
    """Records publishes and how many awaited their acknowledgement at once."""

    def __init__(self) -> None:
        self.sent: dict[str, bytes] = {}
        self.waiting = self.most = 0

    def down(self) -> list[str]:
        return []

    def shard_of(self, store: str) -> str:
        return "default"

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        await asyncio.sleep(0.01)  # the broker's acknowledgement
        self.waiting -= 1
        assert retain and qos == 1
        self.sent[topic] = payload


async def test_republish_all_publishes_every_store_with_bounded_acks(db: HqDb, tmp_path: Path) -> None:
    svc = _chain(db, tmp_path)
    link = _Link()
    svc.link = link  # type: ignore[assignment]
    assert await svc.republish_all(in_flight=3) == 0
    assert link.most == 3  # concurrent, and no more than asked
    assert set(link.sent) == {topics.bundle(s) for s in STORES}
    verifier = Verifier(svc.signer.public_raw)
    for s in STORES:
        b = decode(verifier.open(link.sent[topics.bundle(s)], "bundle"), Bundle)
        assert b.store.id == s
    assert await svc.republish_all([*STORES, "nope"]) == 1  # the unknown store fails alone
    assert svc.stats.bundles_published == 2 * len(STORES)


def test_a_refresh_reuses_a_stores_tables_only_while_their_inputs_hold(db: HqDb, tmp_path: Path) -> None:
    """A store's token tables and cut profiles are its last bundle's again while its
    shoppers (keys, consents), the epochs, the model and the targeting are unchanged;
    any of them changing makes them anew."""
    svc = _chain(db, tmp_path)
    store = STORES[0]
    first = svc.build_bundle(store, now=NOW)
    again = svc.build_bundle(store, now=NOW)
    assert again.token_tables is first.token_tables  # reused: a refresh
    never = HqService(db, svc.signer)  # a service that never built it
    never.model = svc.model
    _same(again, never.build_bundle(store, now=NOW))
    mine = sorted(set(first.model.profiles))  # type: ignore[union-attr]
    assert len(mine) >= 2  # the witnesses: both are in the first bundle
    unprofiled, out = mine[0], mine[1]
    db.execute("UPDATE shoppers SET consents = 'offers' WHERE inbox = ?", (unprofiled,))
    db.execute("UPDATE shoppers SET opted_out = 1 WHERE inbox = ?", (out,))
    after = svc.build_bundle(store, now=NOW)
    assert unprofiled not in after.model.profiles  # type: ignore[union-attr]
    held = {i for t in after.token_tables for i in t.tokens.values()}
    assert unprofiled in held and out not in held
    _same(after, never.build_bundle(store, now=NOW))
    svc.model = Model(weights=[0.2], profiles={i: Profile(segments=["y"]) for i in mine})
    assert after.model is not None
    remodelled = svc.build_bundle(store, now=NOW).model
    assert remodelled is not None and remodelled.weights == [0.2]
    later = svc.build_bundle(store, now=NOW + 3 * 2 ** svc.rotation_k)  # three epochs on
    assert [t.epoch for t in later.token_tables] == [t.epoch + 3 for t in after.token_tables]
