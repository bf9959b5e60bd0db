"""The gateway's lifetime cap counts (``cap_lifetime``) go with their campaign: once it is
no longer in the bundle and its end has passed (gateway/campaign_ends.py), from the
retention round; what stays, across a restart, and a campaign that comes back."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec

from aislecast.apps.scenarios import setup_store
from aislecast.kernel.campaign import Campaign, Caps, Creative, Schedule
from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from edge.simstore import STORE_UUID, default_zones
from gateway.caps import CapLedger, Charge
from gateway.config import load_config
from gateway.outbox import Outbox
from gateway.parts import GatewayParts
from gateway.retention import EdgeRetention
from gateway.storage import open_db
from hq.db import HqDb
from hq.service import HqService
from tests.fakeclock import FakeClock

STORE = "store-s"
_HOUR, _DAY = 3_600.0, 86_400.0


def _campaign(cid: str, end: float | None, status: str = "live") -> Campaign:
    return Campaign(id=cid, name=cid, stores=[STORE], creatives=[Creative(id="a", title=cid)],
                    schedule=Schedule(end=end), status=status, caps=Caps(per_campaign=1))


def _rows(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute(
        "SELECT campaign, count(*) FROM cap_lifetime GROUP BY campaign").fetchall())


def test_counts_go_once_a_campaign_left_the_bundle_and_ended(tmp_path: Path) -> None:
    clock = FakeClock()
    t0 = clock.time()
    conn = open_db(tmp_path / "gw.sqlite")
    ledger = CapLedger(conn, clock=clock.time)
    retention = EdgeRetention(conn, Outbox(conn), ledger)
    ended, kept = _campaign("ended", t0 + _HOUR), _campaign("kept", t0 + _HOUR)
    paused, forever = _campaign("paused", t0 + 30 * _DAY), _campaign("forever", None)
    ledger.ends.hold([ended, kept, paused, forever], replace=True)  # a bundle
    day = ledger.ps.day(t0)
    for cid in ("ended", "kept", "paused", "forever", "stranger"):  # stranger: in no bundle
        for inbox in ("a", "b"):
            ledger.charge(Charge(inbox, cid, "v", day, t0, True))
    ledger.flush()
    ledger.ends.hold([kept], replace=True)  # the next bundle holds `kept` only
    retention.purge(t0 + 60)  # nothing has ended yet: all stay
    assert retention.lifetime_purged == 0 and sum(_rows(conn).values()) == 10

    clock.advance(2 * _HOUR)  # `ended` and `kept` have ended; `kept` is still held
    retention.purge(clock.time())
    assert retention.lifetime_purged == 2
    assert _rows(conn) == {"kept": 2, "paused": 2, "forever": 2, "stranger": 2}
    assert ledger.lifetime_count("a", "ended") == 0
    assert ledger.lifetime_count("a", "kept") == 1 and ledger.lifetime_count("b", "paused") == 1
    assert conn.execute("SELECT campaign FROM cap_campaigns ORDER BY campaign").fetchall() == [
        ("forever",), ("kept",), ("paused",)]  # what is pruned, goes from there too
    conn.close()

    # a restart: the end of `paused` (in no bundle since) is known from the file
    conn = open_db(tmp_path / "gw.sqlite")
    ledger = CapLedger(conn, clock=clock.time)
    retention = EdgeRetention(conn, Outbox(conn), ledger)
    ledger.ends.hold([kept], replace=True)  # the persisted bundle, applied on start
    assert ledger.lifetime_count("a", "paused") == 1
    clock.advance(31 * _DAY)
    retention.purge(clock.time())
    assert _rows(conn) == {"kept": 2, "forever": 2, "stranger": 2}
    assert ledger.lifetime_pruned == 2 and ledger.lifetime_count("a", "paused") == 0

    # a peer's late charge of the pruned campaign is not counted again
    now = clock.time()
    day = ledger.ps.day(now)
    assert ledger.charge_remote("peer-e1", "c", "paused", day=day, ts=now, offer=True)
    ledger.commit_remote()
    assert ledger.lifetime_count("c", "paused") == 0 and "paused" not in _rows(conn)

    # it comes back (HQ moved its end later): its counts start from zero
    ledger.ends.hold([kept, msgspec.structs.replace(paused, schedule=Schedule(end=now + _DAY))],
                     replace=True)
    ledger.charge(Charge("a", "paused", "v2", day, now, True))
    ledger.flush()
    assert ledger.lifetime_count("a", "paused") == 1 and _rows(conn)["paused"] == 1
    retention.purge(now + 60)  # held again: kept
    assert _rows(conn)["paused"] == 1
    conn.close()


def test_the_gateway_holds_its_bundles_campaigns(tmp_path: Path) -> None:
    """Through GatewayParts and HQ's own bundles: a campaign HQ ended leaves the next
    bundle and its counts go; a live one's stay."""
    now = time.time()
    key = load_or_create_signing_key(tmp_path / "hq.pem")
    svc = HqService(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"), Signer(key))
    setup_store(svc, STORE, default_zones(), STORE_UUID)
    svc.upsert_store(Store(id=STORE, name="S", tz="UTC"))
    done, live = _campaign("done", now - 60), _campaign("live", now + _DAY)
    for c in (done, live):
        svc.upsert_campaign(c)
    cfg = load_config({"gateway": "gw-s", "store": STORE, "data_dir": str(tmp_path / "gw"),
                       "hq_public_key": public_key_pem(Signer(key).public_key),
                       "scanner": {"backend": "sim"}})
    parts = GatewayParts.open(cfg, notify=lambda kind, data: None, on_bundle=lambda: None)
    parts.apply_bundle(svc.build_bundle(STORE))  # HQ still sends `done` (status live)
    ledger = parts.decider.ledger
    day = ledger.ps.day(now)
    for cid in ("done", "live"):
        ledger.charge(Charge("shopper-1", cid, "v", day, now, True))
    ledger.flush()
    parts.retention.purge(now)
    assert parts.retention.lifetime_purged == 0  # `done` is in the bundle yet
    svc.upsert_campaign(msgspec.structs.replace(done, status="ended"))
    parts.apply_bundle(svc.build_bundle(STORE))
    assert ledger.ends.held == {"live"}
    parts.retention.purge(now)
    assert parts.retention.lifetime_purged == 1
    assert ledger.lifetime_count("shopper-1", "done") == 0
    assert ledger.lifetime_count("shopper-1", "live") == 1
    parts.close()
