"""Applying a bundle keeps no second copy of its token tables, and persists it intact.

The gateway's BundleStore hands the decoded bundle to the gateway once, keeps it without
the tables (the identity resolver holds them compactly), writes the envelope through a
blob handle, and recognises the retained copy of the applied version without decoding
it all again. A restart reads the persisted envelope back byte for byte.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import msgspec

from aislecast.kernel.schema import SCHEMA_VERSION, Bundle, SignedEnvelope, Store, TokenTable
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.verify import Verifier
from gateway.bundles import BundleStore
from gateway.storage import open_db


def _bundle(version: int, shoppers: int) -> Bundle:
    now = time.time()
    tables = [TokenTable(e, {f"{e:08x}{i:08x}": f"inbox-{i}" for i in range(shoppers)})
              for e in range(3)]
    return Bundle(v=SCHEMA_VERSION, version=version, store=Store(id="s1", name="x"), issued_at=now,
                  expires_at=now + 600, zones=[], beacons=[], campaigns=[], rotation_k=9,
                  token_tables=tables)


def test_applied_bundle_is_kept_without_tables_and_persisted_intact(tmp_path: Path) -> None:
    signer = Signer(load_or_create_signing_key(tmp_path / "k.pem"))
    db = open_db(tmp_path / "gw.sqlite")
    seen: list[Bundle] = []

    def store() -> BundleStore:
        return BundleStore(db, Verifier(signer.public_raw), "s1", on_bundle=seen.append,
                           on_delta=lambda d: None)

    first = signer.sign("bundle", _bundle(1, 500))
    gw = store()
    assert gw.offer_bundle(first)
    assert [len(t.tokens) for t in seen[0].token_tables] == [500, 500, 500]  # handed over whole
    assert gw.current is not None and gw.current.version == 1
    assert gw.current.token_tables == []  # and not kept a second time

    assert gw.offer_bundle(first)  # the retained copy again
    assert (gw.redelivered, len(seen)) == (1, 1)

    row = db.execute("SELECT version, envelope FROM bundle WHERE id = 1").fetchone()
    assert (row[0], bytes(row[1])) == (1, first)

    smaller = signer.sign("bundle", _bundle(2, 20))  # the blob shrinks with the bundle
    assert gw.offer_bundle(smaller)
    assert db.execute("SELECT envelope FROM bundle WHERE id = 1").fetchone()[0] == smaller

    restarted = store()
    assert restarted.load_persisted()
    assert restarted.version == 2
    assert [len(t.tokens) for t in seen[-1].token_tables] == [20, 20, 20]
    assert restarted.rejected == {}


class _StoreBeforePositions(msgspec.Struct, frozen=True):
    """:class:`Store` as gateways before store positions (m0015) decode it."""

    id: str
    name: str
    tz: str = "UTC"


def test_a_store_position_reaches_the_gateway_and_older_gateways_ignore_it(tmp_path: Path) -> None:
    signer = Signer(load_or_create_signing_key(tmp_path / "k.pem"))
    seen: list[Bundle] = []
    gw = BundleStore(open_db(tmp_path / "gw.sqlite"), Verifier(signer.public_raw), "s1",
                     on_bundle=seen.append, on_delta=lambda d: None)
    placed = msgspec.structs.replace(_bundle(1, 3), store=Store("s1", "x", latitude=52.5,
                                                                longitude=13.4))
    envelope = signer.sign("bundle", placed)
    assert gw.offer_bundle(envelope) and gw.rejected == {}
    assert (seen[0].store.latitude, seen[0].store.longitude) == (52.5, 13.4)
    body = base64.b64decode(msgspec.json.decode(envelope, type=SignedEnvelope).body)
    old = msgspec.json.decode(body, type=dict[str, Any])["store"]
    assert msgspec.convert(old, _StoreBeforePositions) == _StoreBeforePositions("s1", "x")
