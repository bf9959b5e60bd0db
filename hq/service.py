"""HQ's domain service: stores, zones, beacons, campaigns, shoppers, bundles and deltas.

Owned by the HQ process and passed to the HTTP API and ingest (no global state). It
builds each store's bundle (zones, beacons, live campaigns, the token tables of the
next epochs for the store's opted-in shoppers (:mod:`hq.scope`: home stores and recent
visits; the model's profiles cut the same way, :mod:`hq.store_model`), opt-outs), signs
it and publishes it retained.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from aislecast.kernel import topics
from aislecast.kernel.campaign import PausedBy
from aislecast.kernel.const import TOKEN_EPOCHS_AHEAD, TOKEN_ROTATION_K
from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    Beacon,
    Bundle,
    BundleDelta,
    Campaign,
    Model,
    Profile,
    Store,
    TokenTable,
    Zone,
    decode,
)
from aislecast.kernel.signing import Signer
from aislecast.kernel.tokens import EidMaker, epoch_of, epoch_start, new_identity_key, new_inbox
from hq.bundle_round import STORE_COLUMNS, ChainRound, StorePart, read_round, store_of
from hq.consent import Source, check_home_stores, check_purposes, record_consent, record_enrolment
from hq.credentials import CredentialRegistry
from hq.db import HqDb
from hq.purposes import granting, grants
from hq.redeem_keys import RedeemKeys
from hq.scope import keys_of_store, opted_out_of, set_homes
from hq.shards import BrokerShards
from hq.store_model import Targeted, store_model, targeted

__all__ = ["MAX_TEXT", "MAX_TZ", "REPUBLISH_IN_FLIGHT", "Enrollment", "HqService", "InvalidInput", "NotFound",
           "ServiceStats", "check_id", "check_position", "check_text", "check_tz"]

log = get_logger(__name__)

# A bundle stays valid this long after issue; HQ republishes far more often, so a
# gateway that loses HQ keeps working on its last bundle for a day.
_BUNDLE_TTL_S = 86_400.0
_DELTA_TTL_S = 3_600.0


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_id(field: str, value: str) -> list[str]:
    """Ids become MQTT topic levels and broker usernames: letters, digits, '-', '_'."""
    if _ID.fullmatch(value):
        return []
    return [f"{field}: {value!r} must be 1-64 letters, digits, '-' or '_' (it becomes an MQTT "
            "topic level; '+', '#', '/' and '.' are not allowed)"]


# The longest IANA zone name is 32 characters (America/Argentina/ComodRivadavia).
MAX_TZ: Final = 64
# Any other string HQ takes over HTTP (names, titles, bodies, URLs): a creative's body is
# a sentence or two; 2,000 characters is generous and keeps bundles small.
MAX_TEXT: Final = 2_000


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_tz(field: str, value: str) -> list[str]:
    """A time zone must be one of zoneinfo's names (never opened as a file path here)."""
    if len(value) <= MAX_TZ and value in _zones():
        return []
    shown = value if len(value) <= MAX_TZ else value[:MAX_TZ] + "..."
    return [f"{field}: {shown!r} is not an IANA time zone (e.g. Europe/Berlin; at most "
            f"{MAX_TZ} characters)"]


def check_position(store: Store) -> list[str]:
    """A store's ``latitude`` (-90..90) and ``longitude`` (-180..180): both or neither."""
    lat, lon = store.latitude, store.longitude
    if (lat is None) != (lon is None):
        missing, given = ("longitude", "latitude") if lon is None else ("latitude", "longitude")
        return [f"{missing}: missing while {given} is set; give both or neither"]
    out = []
    for field, value, limit in (("latitude", lat, 90.0), ("longitude", lon, 180.0)):
        if value is not None and not -limit <= value <= limit:  # NaN fails too
            out.append(f"{field}: {value!r} is not between {-limit:g} and {limit:g} degrees")
    return out


def check_text(field: str, value: Any, limit: int = MAX_TEXT) -> list[str]:
    """Every string in ``value`` (a struct, list or dict, walked) at most ``limit``
    characters, each problem naming its field path."""
    if isinstance(value, str):
        return [] if len(value) <= limit else [
            f"{field}: {len(value)} characters is more than {limit}; shorten it"]
    if isinstance(value, msgspec.Struct):
        return [p for name in value.__struct_fields__
                for p in check_text(f"{field}.{name}" if field else name, getattr(value, name), limit)]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in check_text(f"{field}[{i}]", v, limit)]
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in check_text(f"{field}[{str(k)[:40]!r}]", k, limit)
                + check_text(f"{field}[{str(k)[:40]!r}]", v, limit)]
    return []


class InvalidInput(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class NotFound(LookupError):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what = what
        self.key = key


class Enrollment(msgspec.Struct, frozen=True):
    """What a phone receives once at opt-in: its pseudonymous inbox and identity key, and
    its broker login (username = inbox; the password is shown here once, HQ keeps only
    its hash)."""

    inbox: str
    identity_key: str  # hex, 16 bytes
    rotation_k: int
    consents: list[str]
    broker_username: str | None = None
    broker_password: str | None = None
    # the stores that receive the shopper at once (hq.scope); empty: each store once it
    # first sees them
    home_stores: list[str] = msgspec.field(default_factory=list)
    # the shopper's own HQ API token (consent, export, erase: hq.rights), shown once
    api_token: str | None = None


@dataclass(slots=True)
class ServiceStats:
    bundles_published: int = count("signed bundles published (retained)")
    deltas_published: int = count("signed deltas published (opt-outs, pauses, flash)")
    shoppers_enrolled: int = count("shoppers enrolled")
    opt_outs: int = count("shoppers opted out")
    refused: dict[str, int] = by("what", "writes refused as invalid (HTTP 422), per kind of record")


@dataclass(frozen=True, slots=True)
class _LastTables:
    """What one store's last bundle's token tables and cut model were made of, and them."""

    epochs: range
    rows: list[tuple[str, str, str]]  # hq.scope.keys_of_store: keys and consents
    model: Model | None
    targeted: Targeted
    tables: list[TokenTable]
    cut: Model | None


#: a round for more stores than this reads the chain's shoppers once, not per store
_ROUND_MIN_STORES: Final = 4
#: bundles of a round awaiting their broker's acknowledgement at once
REPUBLISH_IN_FLIGHT: Final = 64


class HqService:
    """``link`` publishes bundles and deltas, each on its store's broker
    (:class:`hq.shards.BrokerShards`); without one (offline tools, tests of the registry)
    everything but publishing works."""

    def __init__(self, db: HqDb, signer: Signer, *, link: BrokerShards | None = None,
                 rotation_k: int = TOKEN_ROTATION_K) -> None:
        self.db = db
        self.signer = signer
        self.rotation_k = rotation_k
        self.credentials = CredentialRegistry(db)  # broker logins (hq.credentials)
        self.link = link
        self._eid_cache: dict[tuple[str, int], str] = {}
        self._eid_low = -1  # no epoch below this is cached (pruned up to it)
        # per shopper: the epochs of the last bundle's tables and their tokens (read only)
        self._runs: dict[str, tuple[range, list[str]]] = {}
        self._makers: dict[str, EidMaker] = {}  # per shopper (aislecast.kernel.tokens)
        self.model: Model | None = None  # ranking model shipped in bundles (hq.learning)
        self.redeem: RedeemKeys | None = None  # till codes' keys (hq.redeem_keys); None: no codes
        self.stats = ServiceStats()
        self.campaign_listeners: list[Callable[[Campaign], None]] = []  # after each save
        self.shopper_listeners: list[Callable[[str], None]] = []  # an inbox enrolled or erased
        self._targeted: Targeted | None = None  # what the last bundle's profiles were cut to
        self._last_tables: dict[str, _LastTables] = {}  # per store (_store_tables)

    def refuse(self, what: str, problems: list[str]) -> None:
        """Raise :class:`InvalidInput` (422) for ``problems``, if any, counted and logged once."""
        if not problems:
            return
        self.stats.refused[what] = self.stats.refused.get(what, 0) + 1
        log.warning("invalid input refused", what=what, problems=problems[:5])
        raise InvalidInput(problems)

    # ---- registry -------------------------------------------------------------------
    def upsert_store(self, store: Store) -> None:
        """Raises :class:`InvalidInput` for an id unusable in topics or a bad time zone."""
        self.refuse("store", check_id("id", store.id) + check_tz("tz", store.tz)
                    + check_position(store) + check_text("", store, limit=200))
        self.db.execute(
            "INSERT INTO stores(id, name, tz, latitude, longitude) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, tz = excluded.tz,"
            " latitude = excluded.latitude, longitude = excluded.longitude",
            (store.id, store.name, store.tz, store.latitude, store.longitude),
        )

    def get_store(self, store_id: str) -> Store:
        row = self.db.one(f"SELECT {STORE_COLUMNS} FROM stores WHERE id = ?", (store_id,))  # noqa: S608
        if row is None:
            raise NotFound("store", store_id)
        return store_of(row)

    def store_ids(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT id FROM stores ORDER BY id")]

    def _upsert_body(self, table: str, store: str, key: str, body: msgspec.Struct) -> None:
        self.get_store(store)
        self.db.execute(
            f"INSERT INTO {table}(store, id, body) VALUES (?, ?, ?) ON CONFLICT (store, id)"  # noqa: S608
            " DO UPDATE SET body = excluded.body",
            (store, key, msgspec.json.encode(body).decode()),
        )

    def upsert_zone(self, store: str, zone: Zone) -> None:
        self.refuse("zone", check_id("store", store) + check_id("id", zone.id)
                    + check_text("", zone, limit=200))
        self._upsert_body("zones", store, zone.id, zone)

    def upsert_beacon(self, store: str, beacon: Beacon) -> None:
        """Raises :class:`InvalidInput` for a zone the store does not have (it would
        ship to gateways as a beacon placed nowhere)."""
        self.refuse("beacon", check_id("store", store) + check_id("id", beacon.id)
                    + check_id("zone", beacon.zone) + check_text("", beacon, limit=200))
        self.get_store(store)
        self.refuse("beacon", self.zone_problems(store, "zone", beacon.zone))
        self._upsert_body("beacons", store, beacon.id, beacon)

    def zone_problems(self, store: str, field: str, zone: str) -> list[str]:
        """``[]`` when ``store`` has zone ``zone``; else one line naming the zones it has."""
        have = [z.id for z in self.zones(store)]
        if zone in have:
            return []
        return [f"{field}: store {store!r} has no zone {zone[:64]!r}; its zones: "
                f"{', '.join(have) or f'none yet (POST /api/stores/{store}/zones)'}"]

    def zones(self, store: str) -> list[Zone]:
        rows = self.db.query("SELECT body FROM zones WHERE store = ? ORDER BY id", (store,))
        return [decode(r[0], Zone) for r in rows]

    def beacons(self, store: str) -> list[Beacon]:
        rows = self.db.query("SELECT body FROM beacons WHERE store = ? ORDER BY id", (store,))
        return [decode(r[0], Beacon) for r in rows]

    def upsert_campaign(self, c: Campaign) -> None:
        self.db.execute(
            "INSERT INTO campaigns(id, body, status, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body, status = excluded.status,"
            " updated_at = excluded.updated_at",
            (c.id, msgspec.json.encode(c).decode(), c.status, time.time()),
        )
        for fn in self.campaign_listeners:
            fn(c)

    def campaigns(self, store: str | None = None) -> list[Campaign]:
        out = [decode(r[0], Campaign) for r in self.db.query("SELECT body FROM campaigns ORDER BY id")]
        return out if store is None else [c for c in out if store in c.stores]

    def get_campaign(self, cid: str) -> Campaign:
        row = self.db.one("SELECT body FROM campaigns WHERE id = ?", (cid,))
        if row is None:
            raise NotFound("campaign", cid)
        return decode(row[0], Campaign)

    # ---- shoppers -------------------------------------------------------------------
    def enroll(self, consents: list[str], home_stores: list[str] | None = None, *,
               source: Source = "api") -> Enrollment:
        """A new shopper granting ``consents`` (purposes of :data:`hq.consent.PURPOSES`),
        shopping at ``home_stores`` (stores HQ has, which receive the shopper at once;
        empty: each store from its first sighting, :mod:`hq.first_visit`). Raises
        InvalidInput."""
        homes = sorted(set(home_stores or []))
        problems = check_purposes("consents", consents)
        if homes:
            problems += check_home_stores("home_stores", homes, set(self.store_ids()))
        self.refuse("shopper", problems)
        inbox, key = new_inbox(), new_identity_key()
        granted = sorted(set(consents))
        with self.db.transaction(immediate=True):
            self.db.execute(
                "INSERT INTO shoppers(inbox, identity_key, consents, created_at, home_stores)"
                " VALUES (?, ?, ?, ?, ?)",
                (inbox, key.hex(), ",".join(granted), time.time(), msgspec.json.encode(homes).decode()),
            )
            record_enrolment(self.db, inbox, granted, source=source)
            set_homes(self.db, inbox, homes)
        password = self.credentials.issue("phone", inbox)
        self.stats.shoppers_enrolled += 1
        for fn in self.shopper_listeners:
            fn(inbox)
        return Enrollment(inbox, key.hex(), self.rotation_k, granted,
                          broker_username=inbox, broker_password=password, home_stores=homes)

    def opted_out(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT inbox FROM shoppers WHERE opted_out = 1")]

    def token_tables(self, now: float, purpose: str = "offers", *, store: str | None = None,
                     rows: Sequence[tuple[str, str, str]] | None = None) -> list[TokenTable]:
        """``token -> inbox`` for the previous, current and next epochs, opted-in only:
        of the shoppers ``store`` receives (:func:`hq.scope.keys_of_store`; ``rows``:
        those already read, :func:`hq.scope.by_store`), or of the whole chain
        without one."""
        if rows is None:
            rows = (self.db.query("SELECT inbox, identity_key, consents FROM shoppers"
                                  " WHERE opted_out = 0")
                    if store is None else keys_of_store(self.db, store, now))
        epochs = self._token_epochs(now)
        by_epoch: list[dict[str, str]] = [{} for _ in epochs]
        for inbox, key_hex, consents in rows:
            if not grants(consents, purpose):
                continue
            for tokens, tok in zip(by_epoch, self.tokens_of(inbox, key_hex, epochs), strict=True):
                tokens[tok] = inbox
        tables = [TokenTable(e, t) for e, t in zip(epochs, by_epoch, strict=True)]
        stale = epochs.start - 2
        if self._eid_low < stale:  # once an epoch, not once a store: the cache is big
            # list(): one copy, so a first-visit table built in a worker thread meanwhile
            # (hq.first_visit, adding to the cache) does not break the loop
            for key in [k_ for k_ in list(self._eid_cache) if k_[1] < stale]:
                self._eid_cache.pop(key, None)
            self._eid_low = stale
        return tables

    def _token_epochs(self, now: float) -> range:
        """The epochs a bundle carries tables for: the one before now's to the last ahead."""
        first = epoch_of(now, self.rotation_k) - 1
        return range(first, first + TOKEN_EPOCHS_AHEAD + 2)

    def tokens_of(self, inbox: str, key_hex: str, epochs: Sequence[int]) -> list[str]:
        """``inbox``'s tokens of ``epochs`` (hex), cached; those not cached yet made in
        one AES pass of the shopper's :class:`EidMaker`."""
        run = self._runs.get(inbox)
        if run is not None and run[0] == epochs:  # a refresh round: the same epochs again
            return run[1]
        cache = self._eid_cache
        missing = [e for e in epochs if (inbox, e) not in cache]
        if missing:
            maker = self._makers.get(inbox)
            if maker is None:
                maker = self._makers[inbox] = EidMaker(bytes.fromhex(key_hex), self.rotation_k)
            k = self.rotation_k
            for e, tok in zip(missing, maker.eids([epoch_start(e, k) for e in missing]), strict=True):
                cache[(inbox, e)] = tok.hex()
        out = [cache[(inbox, e)] for e in epochs]
        if isinstance(epochs, range):
            self._runs[inbox] = (epochs, out)
        return out

    def eid_hex(self, inbox: str, key_hex: str, epoch: int) -> str:
        """``inbox``'s token of ``epoch`` (cached)."""
        return self.tokens_of(inbox, key_hex, [epoch])[0]

    def forget_shopper(self, inbox: str) -> None:
        """Drop an erased shopper's cached key schedule and tokens."""
        self._makers.pop(inbox, None)
        self._runs.pop(inbox, None)
        self._last_tables.clear()  # rare: every store's next bundle makes its tables again
        for key in [k_ for k_ in list(self._eid_cache) if k_[0] == inbox]:
            self._eid_cache.pop(key, None)

    def shopper_tokens(self, inbox: str, now: float | None = None) -> list[TokenTable]:
        """One shopper's part of :meth:`token_tables` (the same epochs and tokens), for
        the delta that admits them (hq.rights); empty for no such shopper."""
        row = self.db.one("SELECT identity_key FROM shoppers WHERE inbox = ?", (inbox,))
        if row is None:
            return []
        epochs = self._token_epochs(time.time() if now is None else now)
        return [TokenTable(e, {tok: inbox})
                for e, tok in zip(epochs, self.tokens_of(inbox, row[0], epochs), strict=True)]

    # ---- bundles and deltas ------------------------------------------------------------
    def _delta_seq(self, store_id: str) -> int:
        row = self.db.one("SELECT delta_seq FROM stores WHERE id = ?", (store_id,))
        return 0 if row is None else int(row[0])

    def _bump(self, column: str, store_id: str) -> int:
        """Atomically take the next bundle version or delta sequence number of a store, so
        several HQ workers never hand out the same one (UPDATE ... RETURNING)."""
        assert column in {"bundle_version", "delta_seq"}
        row = self.db.one(
            f"UPDATE stores SET {column} = {column} + 1 WHERE id = ? RETURNING {column}",  # noqa: S608
            (store_id,),
        )
        if row is None:
            raise NotFound("store", store_id)
        return int(row[0])

    def build_bundle(self, store_id: str, now: float | None = None, *,
                     chain: ChainRound | None = None) -> Bundle:
        """``store_id``'s bundle; ``chain``: what a round for many stores read once
        (:meth:`republish_all`) instead of per store."""
        now = time.time() if now is None else now
        if chain is None:
            store = self.get_store(store_id)
            # read before the shoppers: a delta sent while this bundle is built has a higher
            # seq, so gateways apply it again on top of the bundle (gateway.consent)
            part = StorePart(store, delta_seq=self._delta_seq(store_id),
                             version=self._bump("bundle_version", store_id))
            every = self.campaigns()
            rows = keys_of_store(self.db, store_id, now)
            part.zones, part.beacons = self.zones(store_id), self.beacons(store_id)
            part.opt_outs = opted_out_of(self.db, store_id)
            part.gateways = self.credentials.gateways_of(store_id)
        else:
            found = chain.parts.get(store_id)
            if found is None:
                raise NotFound("store", store_id)
            part, every, rows = found, chain.campaigns, found.keys
        live = [c for c in every if store_id in c.stores and c.status in {"live", "scheduled"}]
        self._targeted = targeted(every)
        tables, cut = self._store_tables(store_id, now, rows, self._targeted)
        return Bundle(
            v=SCHEMA_VERSION, version=part.version, store=part.store, issued_at=now,
            expires_at=now + _BUNDLE_TTL_S, zones=part.zones, beacons=part.beacons,
            campaigns=live, rotation_k=self.rotation_k, token_tables=tables,
            opt_outs=part.opt_outs, model=cut,
            delta_seq=part.delta_seq, keys=list(self.signer.notices), gateways=part.gateways,
            redeem_key=None if self.redeem is None else self.redeem.hex_of(store_id),
        )

    def _store_tables(self, store_id: str, now: float, rows: Sequence[tuple[str, str, str]],
                      t: Targeted) -> tuple[list[TokenTable], Model | None]:
        """``store_id``'s token tables and cut model; those of its last bundle again when
        its shoppers (keys and consents), the epochs, the model and the targeting are the
        same: a refresh round (a shopper's tokens of an epoch never change). Read only."""
        epochs = self._token_epochs(now)
        last = self._last_tables.get(store_id)
        if (last is not None and last.epochs == epochs and last.model is self.model
                and last.targeted == t and last.rows == rows):
            return last.tables, last.cut
        tables = self.token_tables(now, rows=rows)
        # profiles of the shoppers it resolves who grant personalisation (hq.purposes)
        mine = {i for i, _, c in rows if grants(c, "offers") and grants(c, "personalisation")}
        cut = store_model(self.model, mine, t)
        self._last_tables[store_id] = _LastTables(epochs, list(rows), self.model, t, tables, cut)
        return tables, cut

    def shopper_profiles(self, inboxes: list[str]) -> dict[str, Profile]:
        """The model's profiles of ``inboxes``, cut as bundles cut them, for the delta that
        admits them (hq.first_visit); empty without a model or profiles, and none of a
        shopper without ``personalisation`` (hq.purposes)."""
        t = self._targeted if self._targeted is not None else targeted(self.campaigns())
        model = store_model(self.model, granting(self.db, inboxes, "personalisation"), t)
        return {} if model is None else dict(model.profiles)

    def widens_targeting(self, c: Campaign) -> bool:
        """Whether ``c`` targets a segment or loyalty tier the profiles of the bundles
        built so far were cut without (:mod:`hq.store_model`): its stores then need a
        fresh bundle, not only the delta carrying ``c``."""
        t = self._targeted
        return t is not None and (not set(c.audience.segments) <= t.segments
                                  or (bool(c.audience.loyalty_tiers) and not t.tiers))

    async def publish_bundle(self, store_id: str) -> Bundle:
        bundle = self.build_bundle(store_id)
        if self.link is None:
            raise RuntimeError("HQ has no MQTT link")
        await self.link.publish(topics.bundle(store_id), self.signer.sign("bundle", bundle),
                                qos=1, retain=True)
        self.stats.bundles_published += 1
        log.info("bundle published", store=store_id, version=bundle.version)
        return bundle

    async def republish_all(self, stores: list[str] | None = None, *,
                            in_flight: int = REPUBLISH_IN_FLIGHT) -> int:
        """A fresh bundle for every store (or those named); returns how many could not be
        published. Built one after another (for more than a few stores from one read of
        the chain, :func:`hq.bundle_round.read_round`) and published while the next are built, at most
        ``in_flight`` awaiting their broker's acknowledgement."""
        names = self.store_ids() if stores is None else stores
        down = set() if self.link is None else set(self.link.down())
        now = time.time()
        # a few stores: their own queries; more: one read of the chain (hq.bundle_round)
        chain = (read_round(self.db, self.credentials, names, now, self.campaigns())
                 if len(names) > _ROUND_MIN_STORES else None)
        slots = asyncio.Semaphore(max(1, in_flight))
        failures = 0

        async def send(store: str, payload: bytes, version: int) -> None:
            nonlocal failures
            try:
                if self.link is None:
                    raise RuntimeError("HQ has no MQTT link")
                await self.link.publish(topics.bundle(store), payload, qos=1, retain=True)
                self.stats.bundles_published += 1
                log.info("bundle published", store=store, version=version)
            except Exception:
                failures += 1
                log.exception("bundle republish failed", store=store)
            finally:
                slots.release()

        async with asyncio.TaskGroup() as tg:
            for store in names:
                if self.link is not None and self.link.shard_of(store) in down:
                    failures += 1  # not waited for: the next round (or request) publishes it
                    continue
                await slots.acquire()
                try:
                    bundle = self.build_bundle(store, now, chain=chain)
                    payload = self.signer.sign("bundle", bundle)
                except Exception:
                    slots.release()
                    failures += 1
                    log.exception("bundle republish failed", store=store)
                    continue
                tg.create_task(send(store, payload, bundle.version), name=f"bundle:{store}")
                await asyncio.sleep(0)  # the loop writes it out while the next is built
        return failures

    async def publish_delta(self, store_id: str, *, opt_outs: list[str] | None = None,
                            paused: list[str] | None = None,
                            campaigns: list[Campaign] | None = None,
                            opt_ins: list[str] | None = None,
                            tokens: list[TokenTable] | None = None,
                            erased: list[str] | None = None,
                            profiles: dict[str, Profile] | None = None,
                            unprofiled: list[str] | None = None) -> BundleDelta:
        seq = self._bump("delta_seq", store_id)
        now = time.time()
        delta = BundleDelta(v=SCHEMA_VERSION, seq=seq, store=store_id, issued_at=now,
                            expires_at=now + _DELTA_TTL_S, opt_outs=opt_outs or [],
                            paused=paused or [], campaigns=campaigns or [],
                            opt_ins=opt_ins or [], tokens=tokens or [], erased=erased or [],
                            profiles=profiles or {}, unprofiled=unprofiled or [])
        if self.link is None:
            raise RuntimeError("HQ has no MQTT link")
        await self.link.publish(topics.bundle_delta(store_id), self.signer.sign("delta", delta), qos=1)
        self.stats.deltas_published += 1
        return delta

    async def opt_out(self, inbox: str, *, source: Source = "api") -> None:
        """Opt a shopper out everywhere (withdraw "offers", recorded in the consent
        history, and log the phone out): a delta to every store now, bundles right after."""
        self.refuse("opt-out", check_id("inbox", inbox))
        if record_consent(self.db, inbox, "offers", False, source=source) is None:
            raise NotFound("shopper", inbox)
        self.credentials.revoke(inbox)  # the broker kicks the phone at the next reload
        self.stats.opt_outs += 1
        failed: list[str] = []
        stores = self.store_ids()
        for store in stores:  # the delta first, everywhere: it is what gateways apply in seconds
            try:  # one broken store must not keep the opt-out from the others
                await self.publish_delta(store, opt_outs=[inbox])
            except Exception:
                log.exception("opt-out delta not published", store=store)
                failed.append(store)
        for store in stores:
            try:
                await self.publish_bundle(store)
            except Exception:
                log.exception("bundle after opt-out not published", store=store)
                failed.append(store)
        if failed:
            raise RuntimeError(f"opt-out stored, but not yet published to stores {sorted(set(failed))}")

    async def pause_campaign(self, cid: str, *, paused_by: PausedBy | None = None) -> Campaign:
        """Pause ``cid`` and tell its stores' gateways by delta; ``paused_by``: the
        auto-pause rule that did it (hq.autopause), kept on the campaign while paused."""
        c = self.get_campaign(cid)
        c = msgspec.structs.replace(c, status="paused", paused_by=paused_by or c.paused_by)
        self.upsert_campaign(c)
        for store in c.stores:
            # the paused body rides along so gateways can name the pause in decisions
            await self.publish_delta(store, paused=[cid], campaigns=[c])
        return c
