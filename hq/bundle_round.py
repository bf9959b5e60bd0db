"""One read of the chain for a round of bundles (HQ start, a key change, every refresh).

Building one store's bundle reads the store, its zones, beacons, shoppers' keys,
opt-outs and gateways, and takes the next bundle version: a handful of queries. A round
for 1,000 stores made that 1,000 times over, and its shoppers' query once per store
(``aislecast bench fanout_bundles``, docs/scale.md#full-bundle-fan-out). :func:`read_round`
reads the same for many stores in a few chain-wide queries; :meth:`HqService.build_bundle`
takes its :class:`StorePart` instead of querying.

Order, as the per-store path keeps it: every store's ``delta_seq`` is read before the
shoppers (a delta sent meanwhile has a higher seq, so gateways apply it again on top of
the bundle, :mod:`gateway.consent`); the versions are taken (one ``UPDATE ...
RETURNING``) before any bundle of the round is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aislecast.kernel.schema import Beacon, Campaign, Store, Zone, decode
from hq.db import marks
from hq.scope import by_store

if TYPE_CHECKING:
    from hq.credentials import CredentialRegistry
    from hq.db import HqDb

__all__ = ["STORE_COLUMNS", "ChainRound", "StorePart", "read_round", "store_of"]

_CHUNK: Final = 500  # store ids per statement (SQLite's bound on parameters is far above)
#: The ``stores`` columns a :class:`Store` is read from, in :func:`store_of`'s order.
STORE_COLUMNS: Final = "id, name, tz, latitude, longitude"


def store_of(row: Sequence[Any]) -> Store:
    """The :class:`Store` of a row that starts with :data:`STORE_COLUMNS`."""
    lat, lon = row[3], row[4]
    return Store(id=row[0], name=row[1], tz=row[2], latitude=None if lat is None else float(lat),
                 longitude=None if lon is None else float(lon))


@dataclass(slots=True)
class StorePart:
    """What one store's bundle of the round is made of, besides the campaigns."""

    store: Store
    version: int
    delta_seq: int
    zones: list[Zone] = field(default_factory=list)
    beacons: list[Beacon] = field(default_factory=list)
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # hq.scope.keys_of_store
    opt_outs: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChainRound:
    parts: dict[str, StorePart]  # by store id; a store HQ does not have is absent
    campaigns: list[Campaign]


def read_round(db: HqDb, credentials: CredentialRegistry, names: Sequence[str], now: float,
               campaigns: list[Campaign]) -> ChainRound:
    """The parts of the stores ``names`` (those HQ has), each with its next version taken."""
    wanted = set(names)
    seqs = {str(r[0]): (store_of(r), int(r[5])) for r in db.query(
        f"SELECT {STORE_COLUMNS}, delta_seq FROM stores")}  # noqa: S608 - a constant
    keys, outs = by_store(db, now)
    ids = sorted(wanted & set(seqs))
    versions: dict[str, int] = {}
    with db.transaction():
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            versions.update((str(r[0]), int(r[1])) for r in db.query(
                "UPDATE stores SET bundle_version = bundle_version + 1"  # noqa: S608 - marks only
                f" WHERE id IN ({marks(len(chunk))}) RETURNING id, bundle_version", chunk))
    parts = {s: StorePart(seqs[s][0], versions[s], seqs[s][1], keys=keys.get(s, []))
             for s in ids if s in versions}
    for store, body in db.query("SELECT store, body FROM zones ORDER BY store, id"):
        if (p := parts.get(store)) is not None:
            p.zones.append(decode(body, Zone))
    for store, body in db.query("SELECT store, body FROM beacons ORDER BY store, id"):
        if (p := parts.get(store)) is not None:
            p.beacons.append(decode(body, Beacon))
    for store, inboxes in outs.items():
        if (p := parts.get(store)) is not None:
            p.opt_outs = inboxes
    for store, gateways in credentials.gateways_by_store().items():
        if (p := parts.get(store)) is not None:
            p.gateways = gateways
    return ChainRound(parts, campaigns)
