"""Events in, with their rollups, in one transaction per batch (hq.rollup_schema's tables).

:func:`store_batch` is HQ's only writer of ``events``: it inserts a batch with ``ON
CONFLICT (id) DO NOTHING RETURNING id`` and adds to the rollups exactly the rows the
database reports inserted, in the same transaction, so an event already stored (a QoS 1
redelivery, an outbox resend, another HQ worker that got it first) is never counted
twice, and a failed batch leaves neither; the distinct shoppers per stage
(:mod:`hq.reach`) are added from the same rows in the same transaction. The rollup rows
are grouped from the rows inserted in SQL, with the backfill's own key SQL
(:func:`hq.rollup_schema.key_sql`), on both databases: on PostgreSQL the insert and the
upserts are one statement, on SQLite a few multi-row inserts
(:meth:`hq.db.HqDb.insert_rows`) and one upsert per rollup (and one for reach). Upserts
run in key order, so two workers adding to the same rows wait for each other instead of
deadlocking.

Before inserting, each event gets the dimensions it does not carry itself:

* ``trigger_kind``: ``enter``/``dwell``/``exit`` for zone events, ``tap``/``scan`` for
  taps, a decision's ``detail.trigger`` (the gateway's trigger kind), and for an offer's
  ``offer_*`` events the trigger of its decision;
* an offer's feedback (phones send no variant or zone) takes the variant and zone of
  its ``offer_published`` event;
* a gateway's ``tap`` event (an app's NFC tap or QR scan) names no campaign; when its
  short link code, or its tag, names one in ``shortlinks``, it is counted for it (the
  ``/s/{code}`` clicks carry their link's campaign already).

The event's ``body`` stays as it arrived; the filled-in values are its columns. An
:class:`OfferMemo` (HQ's ingest keeps one) remembers the offers' dimensions, so the
usual batch needs no lookup.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from aislecast.kernel.campaign import TRIGGER_KINDS
from aislecast.kernel.schema import Event
from hq.inbox_index import catch_up
from hq.reach import counted, upsert_sql
from hq.rollup_schema import (
    ROLLUPS,
    Rollup,
    create,
    fill_columns,
    key_sql,
    rebuild,
)

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["Filled", "OfferMemo", "backfill", "fill", "m0009_rollups", "store_batch", "trigger_of"]

_COLUMNS: Final = ("id", "kind", "ts", "store", "gateway", "campaign", "variant", "offer",
                   "inbox", "zone", "reason", "holdout", "trigger_kind", "body")
_CHUNK: Final = 500  # ids per IN (...) list
_ZONE_TRIGGERS: Final = {"zone_enter": "enter", "zone_dwell": "dwell", "zone_exit": "exit"}
_OFFER_SOURCES: Final = ("decision", "offer_published")
_ENCODE: Final = msgspec.json.Encoder().encode  # an instance: cheaper a call than msgspec.json.encode


@dataclass(slots=True)
class Filled:
    """An event's columns as stored: its own, plus what :func:`fill` found."""

    event: Event
    campaign: str | None
    variant: str | None
    zone: str | None
    trigger: str | None

    def row(self) -> tuple[object, ...]:
        e = self.event
        return (e.id, e.kind, e.ts, e.store, e.gateway, self.campaign, self.variant, e.offer,
                e.inbox, self.zone, e.reason, None if e.holdout is None else int(e.holdout),
                self.trigger, _ENCODE(e).decode())


def trigger_of(e: Event) -> str | None:
    """The trigger an event states itself (None: an offer's, found from its decision)."""
    if e.kind in _ZONE_TRIGGERS:
        return _ZONE_TRIGGERS[e.kind]
    if e.kind == "tap":
        return "scan" if e.reason == "scan" else "tap"
    said = (e.detail or {}).get("trigger")
    return said if isinstance(said, str) and said in TRIGGER_KINDS else None


def _merge(had: tuple[str | None, ...] | None, more: tuple[str | None, ...]
           ) -> tuple[str | None, ...]:
    """``had`` with its missing values taken from ``more``."""
    if had is None:
        return more
    return tuple(h if h is not None else m for h, m in zip(had, more, strict=True))


def _offer_sources(db: HqDb, offers: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
    """offer -> (trigger, variant, zone) from its stored decision and offer_published."""
    out: dict[str, tuple[str | None, ...]] = {}
    for i in range(0, len(offers), _CHUNK):
        part = list(offers[i:i + _CHUNK])
        rows = db.query("SELECT offer, trigger_kind, variant, zone FROM events"  # noqa: S608
                        f" WHERE offer IN ({', '.join('?' * len(part))})"
                        " AND kind IN ('decision', 'offer_published')", part)
        for offer, *vals in rows:
            out[offer] = _merge(out.get(offer), tuple(vals))
    return out


def _link_campaigns(db: HqDb, taps: Sequence[Filled]) -> None:
    """Attribute gateway taps to the campaign their short link code or tag names."""
    codes = {str(c) for f in taps if (c := (f.event.detail or {}).get("code")) is not None}
    tags = {str(t) for f in taps if (t := (f.event.detail or {}).get("tag")) is not None}
    keys = sorted(codes | tags)[:_CHUNK]
    if not keys:
        return
    marks = ", ".join("?" * len(keys))
    rows = db.query("SELECT code, tag, store, campaign FROM shortlinks WHERE campaign IS NOT NULL"  # noqa: S608
                    f" AND (code IN ({marks}) OR tag IN ({marks}))", [*keys, *keys])
    by_code = {code: campaign for code, _, _, campaign in rows}
    for f in taps:
        d = f.event.detail or {}
        if (code := d.get("code")) is not None and str(code) in by_code:
            f.campaign = by_code[str(code)]
            continue
        named = {c for _, tag, store, c in rows
                 if tag == d.get("tag") and store in (None, f.event.store)}
        if len(named) == 1:  # a tag two campaigns' links name is nobody's
            f.campaign = named.pop()


class OfferMemo:
    """offer -> (trigger, variant, zone) of the decisions and publications stored lately
    (the newest ``size`` to ``1.25 * size``), so an offer's later events need no lookup
    in the database."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._seen: dict[str, tuple[str | None, ...]] = {}
        self._lock = threading.Lock()  # PostgreSQL batches are stored from worker threads

    def known(self, filled: Iterable[Filled]) -> dict[str, tuple[str | None, ...]]:
        """offer -> what is remembered of it, for the offers of ``filled`` it holds."""
        seen = self._seen
        return {o: v for f in filled if (o := f.event.offer) is not None
                and (v := seen.get(o)) is not None}

    def remember(self, stored: Iterable[Filled]) -> None:
        with self._lock:
            seen = self._seen
            for f in stored:
                e = f.event
                if e.offer is not None and e.kind in _OFFER_SOURCES:
                    # popped: re-inserted as the newest
                    seen[e.offer] = _merge(seen.pop(e.offer, None), (f.trigger, f.variant, f.zone))
            if len(seen) > self.size + self.size // 4:  # the oldest go, a quarter at once
                # (dicts keep insertion order; deleting them one by one from the front made
                # each next(iter()) walk past every slot deleted before it: a tenth of a
                # SQLite group's time once the memo was full, 2026-12-03)
                self._seen = dict(itertools.islice(seen.items(), len(seen) - self.size, None))


def fill(db: HqDb, events: Iterable[Event], memo: OfferMemo | None = None) -> list[Filled]:
    """Each event with the dimensions found for it (see the module's docstring); an
    offer's are looked up in ``memo`` first, then in the database."""
    out = [Filled(e, e.campaign, e.variant, e.zone, trigger_of(e)) for e in events]
    known = {} if memo is None else memo.known(out)
    for f in out:  # this batch's own decisions and publications first
        e = f.event
        if e.offer is not None and e.kind in _OFFER_SOURCES:
            known[e.offer] = _merge(known.get(e.offer), (f.trigger, f.variant, f.zone))
    need = [f for f in out if f.event.offer is not None
            and (f.event.kind.startswith("offer_") or f.event.kind == "lead_submitted")
            and None in (f.trigger, f.variant, f.zone)]
    missing = sorted({o for f in need if (o := f.event.offer) is not None
                      and known.get(o, (None,))[0] is None})  # no trigger known yet
    if missing:  # the decision (or publication) came in an earlier batch
        for offer, vals in _offer_sources(db, missing).items():
            known[offer] = _merge(known.get(offer), vals)
    for f in need:
        trig, variant, zone = known.get(f.event.offer or "", (None, None, None))
        f.trigger = f.trigger or trig
        f.variant = f.variant or variant
        f.zone = f.zone or zone
    taps = [f for f in out if f.event.kind == "tap" and f.campaign is None and f.event.detail]
    if taps:
        _link_campaigns(db, taps)
    return out


_INSERT_HEAD: Final = f"INSERT INTO events ({', '.join(_COLUMNS)})"


_PG_TYPES: Final = {"ts": "float8", "holdout": "int4"}  # the rest of _COLUMNS are text


def _pg_statement() -> str:
    """PostgreSQL: the batch's insert, every rollup's upsert and the reach rows as one
    statement. The events go as one array per column (``unnest``), in id order; the
    rollups are added from the rows the insert returns (the ones that were new), grouped
    by the backfill's own key SQL (:func:`hq.rollup_schema.key_sql`), upserted in key
    order; the reach rows from the same rows with the backfill's SQL
    (:func:`hq.reach.upsert_sql`)."""
    arrays = ", ".join(f"?::{_PG_TYPES.get(c, 'text')}[]" for c in _COLUMNS)
    parts = [f"new AS (INSERT INTO events ({', '.join(_COLUMNS)})"  # noqa: S608 - constants
             f" SELECT * FROM unnest({arrays}) ORDER BY 1 ON CONFLICT (id) DO NOTHING"
             " RETURNING id, kind, ts, store, campaign, variant, zone, reason, trigger_kind,"
             " inbox, offer)"]
    for i, r in enumerate(ROLLUPS):
        key = key_sql(r, "postgresql")
        order = ", ".join(str(j + 1) for j in range(len(r.key)))
        parts.append(f"r{i} AS (INSERT INTO {r.table} ({', '.join(r.key)}, n)"  # noqa: S608
                     f" SELECT {key}, count(*) FROM new GROUP BY {key} ORDER BY {order}"
                     f" ON CONFLICT ({', '.join(r.key)}) DO UPDATE SET n = {r.table}.n + excluded.n)")
    parts.append(f"rs AS ({upsert_sql('new')})")  # hq.reach: the shoppers per stage
    return f"WITH {', '.join(parts)} SELECT id FROM new"  # noqa: S608 - constants


_STORE_PG: Final = _pg_statement()


def _store_pg(db: HqDb, filled: list[Filled]) -> set[str]:
    """PostgreSQL: one statement, one round trip, whatever the batch's size (measured
    about twice as fast as a pipeline of a statement per event and per rollup row:
    psycopg's per-statement work was most of the time); its ``RETURNING`` names the ids
    that were new (another worker may be storing the same batch)."""
    columns = [list(c) for c in zip(*(f.row() for f in filled), strict=True)]
    ts = _COLUMNS.index("ts")
    columns[ts] = [float(t) for t in columns[ts]]  # an array is of one type (ts=1 is an int)
    return {str(r[0]) for r in db.returning(_STORE_PG, columns)}


def _sqlite_upsert(r: Rollup) -> str:
    """SQLite: ``r``'s rows added from the events after a rowid (the batch just inserted),
    grouped by the backfill's key SQL, in key order (``WHERE true``: SQLite's upsert
    after a SELECT needs a WHERE to parse)."""
    key = key_sql(r, "sqlite")
    order = ", ".join(str(j + 1) for j in range(len(r.key)))
    return (f"INSERT INTO {r.table} ({', '.join(r.key)}, n)"  # noqa: S608 - constants
            f" SELECT {key}, count(*) FROM events WHERE rowid > ? GROUP BY {key}"
            f" ORDER BY {order} ON CONFLICT ({', '.join(r.key)})"
            f" DO UPDATE SET n = {r.table}.n + excluded.n")


_UPSERT_SQLITE: Final = [_sqlite_upsert(r) for r in ROLLUPS]
_REACH_SQLITE: Final = upsert_sql("events", " AND e.rowid > ?")


def _store_sqlite(db: HqDb, filled: list[Filled], index: bool) -> set[str]:
    """SQLite, under the write lock ``BEGIN IMMEDIATE`` took (no other writer meanwhile):
    the batch's multi-row inserts (:meth:`hq.db.HqDb.insert_rows`), whose conflicts skip
    the ids stored before; the rows they added are those past the table's highest rowid
    before them (a new row's rowid is one more than the highest), and the rollups are
    grouped from them in SQL, as on PostgreSQL. The grouping runs in SQLite's C code,
    which lets go of the GIL: HQ's loop keeps reading MQTT meanwhile (per-event Python
    here used to be most of a batch)."""
    ((top,),) = db.query("SELECT coalesce(max(rowid), 0) FROM events")
    db.insert_rows(_INSERT_HEAD, [f.row() for f in filled], "ON CONFLICT (id) DO NOTHING")
    ((added,),) = db.query("SELECT count(*) FROM events WHERE rowid > ?", (top,))
    # the usual batch is all new: its ids are known without reading 3,200 rows back
    fresh = ({f.event.id for f in filled} if added == len(filled) else
             {str(r[0]) for r in db.query("SELECT id FROM events WHERE rowid > ?", (top,))})
    if index:
        catch_up(db, top + added)  # the shoppers' index, in bulk (hq.inbox_index)
    if fresh:
        db.pipelined([(sql, [(top,)]) for sql in _UPSERT_SQLITE])
        if any(counted(f.event.kind, f.event.inbox, f.campaign) for f in filled):
            db.execute(_REACH_SQLITE, (top,))  # the stage events' shoppers (hq.reach)
    return fresh


def store_batch(db: HqDb, events: Sequence[Event], memo: OfferMemo | None = None, *,
                index: bool = False) -> list[Event]:
    """Store ``events`` (deduplicated by id) and their rollups in one transaction;
    returns the events that were new, in their order. ``memo`` remembers the offers'
    dimensions across batches (:class:`OfferMemo`). ``index``: on SQLite, may also write
    the shoppers' index (:func:`hq.inbox_index.catch_up`, up to a few hundred ms at
    millions of events): only off the event loop."""
    unique = list({e.id: e for e in events}.values())
    if not unique:
        return []
    filled = fill(db, unique, memo)  # reads only: what other events say
    if db.dialect == "postgresql":  # one statement: a transaction of its own (autocommit)
        inserted = _store_pg(db, filled)
    else:
        with db.transaction(immediate=True):
            inserted = _store_sqlite(db, filled, index)
    stored = filled if len(inserted) == len(filled) else [f for f in filled
                                                          if f.event.id in inserted]
    if memo is not None:
        memo.remember(stored)
    return [f.event for f in stored]


def backfill(db: HqDb) -> int:
    """Fill the columns ingest fills, from the events stored (a gateway tap's campaign
    from its short link, too), then rebuild every rollup; returns the taps attributed.
    Idempotent: running it again gives the same rollups."""
    fill_columns(db)
    taps = [Filled(msgspec.json.decode(body, type=Event), None, None, None, None)
            for (body,) in db.query("SELECT body FROM events WHERE kind = 'tap'"
                                    " AND campaign IS NULL AND gateway IS NOT NULL")]
    named = 0
    for i in range(0, len(taps), _CHUNK):
        part = taps[i:i + _CHUNK]
        _link_campaigns(db, part)
        for f in part:
            if f.campaign is not None:
                named += db.execute("UPDATE events SET campaign = ? WHERE id = ?",
                                    (f.campaign, f.event.id))
    rebuild(db)
    return named


def m0009_rollups(db: HqDb) -> None:
    """Hourly rollups and the events' trigger (docs/architecture.md#rollups-and-breakdowns),
    backfilled from the events already stored."""
    create(db)
    backfill(db)
