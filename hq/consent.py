"""Consent purposes and the consent history of each shopper, on HQ's database.

A shopper consents per *purpose*, one of :data:`PURPOSES`. Every change is a row of
``consent_history`` (inbox, purpose, granted, at, source); the current state of a
purpose is its latest row. ``shoppers.consents`` (the comma list that bundles, learning
and the gateways' audience rules read) and ``shoppers.opted_out`` are kept equal to that
state in the same transaction as the row, so nothing else changes to read consent.
Withdrawing ``offers`` is the opt-out (``opted_out = 1``: the bundle's ``opt_outs``
list); granting it again opts the shopper back in.

This module holds the checks and the rows; :mod:`hq.rights` publishes the deltas and
erases. See docs/architecture.md#consent-and-data-rights.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Final, Literal, get_args

import msgspec

from hq.db import HqDb

__all__ = ["MAX_HOME_STORES", "PURPOSES", "SOURCES", "ConsentChange", "Purpose", "Source",
           "check_home_stores", "check_purposes", "consent_history", "current_consents", "home_stores_of",
           "record_consent", "record_enrolment"]

Purpose = Literal["offers", "personalisation", "analytics"]
#: offers: proximity offers in store; personalisation: segments, tier and visits used to
#: rank and target; analytics: events about the shopper kept with their pseudonym.
PURPOSES: Final[tuple[Purpose, ...]] = get_args(Purpose)
Source = Literal["enrol", "wallet", "api", "admin", "erase"]
SOURCES: Final[tuple[Source, ...]] = get_args(Source)
MAX_HOME_STORES: Final = 64


class ConsentChange(msgspec.Struct, frozen=True):
    purpose: str
    granted: bool
    at: float
    source: str


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def check_purposes(field: str, purposes: list[str]) -> list[str]:
    """Each entry one of :data:`PURPOSES`; an unknown one is named."""
    return [f"{field}[{i}]: unknown purpose {_shown(p)}; one of {', '.join(PURPOSES)}"
            for i, p in enumerate(purposes) if p not in PURPOSES]


def check_home_stores(field: str, stores: list[str], known: set[str]) -> list[str]:
    """Each entry a store HQ has (at most :data:`MAX_HOME_STORES`)."""
    if len(stores) > MAX_HOME_STORES:
        return [f"{field}: {len(stores)} stores, at most {MAX_HOME_STORES}"]
    return [f"{field}[{i}]: no store {_shown(s)}" for i, s in enumerate(stores) if s not in known]


def _insert(db: HqDb, inbox: str, changes: list[ConsentChange]) -> None:
    for c in changes:  # a few rows, maybe inside a transaction (not executemany's own)
        db.execute("INSERT INTO consent_history (id, inbox, purpose, granted, at, source)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (uuid.uuid4().hex, inbox, c.purpose, int(c.granted), c.at, c.source))


def record_enrolment(db: HqDb, inbox: str, granted: list[str], *, source: Source,
                     at: float | None = None) -> None:
    """The enrolment's consents as history rows: each purpose granted or refused."""
    at = time.time() if at is None else at
    _insert(db, inbox, [ConsentChange(p, p in granted, at, source) for p in PURPOSES])


def current_consents(db: HqDb, inbox: str) -> list[str] | None:
    """The purposes ``inbox`` grants now (sorted), or None: no such shopper."""
    row = db.one("SELECT consents FROM shoppers WHERE inbox = ?", (inbox,))
    return None if row is None else sorted(p for p in str(row[0]).split(",") if p)


def record_consent(db: HqDb, inbox: str, purpose: Purpose, granted: bool, *, source: Source,
                   at: float | None = None) -> tuple[list[str], bool] | None:
    """Record one change and update the shopper's current consents, in one transaction.

    Returns ``(consents now, whether the purpose changed)``, or None: no such shopper.
    A change to the state it already has is still recorded (who asked, when)."""
    at = time.time() if at is None else at
    with db.transaction(immediate=True):
        before = current_consents(db, inbox)
        if before is None:
            return None
        now = sorted(set(before) | {purpose}) if granted else [p for p in before if p != purpose]
        _insert(db, inbox, [ConsentChange(purpose, granted, at, source)])
        if purpose == "offers":  # the opt-out, or opting back in
            db.execute("UPDATE shoppers SET consents = ?, opted_out = ? WHERE inbox = ?",
                       (",".join(now), int(not granted), inbox))
        else:
            db.execute("UPDATE shoppers SET consents = ? WHERE inbox = ?", (",".join(now), inbox))
    return now, now != before


def consent_history(db: HqDb, inbox: str) -> list[ConsentChange]:
    rows = db.query("SELECT purpose, granted, at, source FROM consent_history WHERE inbox = ?"
                    " ORDER BY at, id", (inbox,))
    return [ConsentChange(r[0], bool(r[1]), float(r[2]), r[3]) for r in rows]


def home_stores_of(db: HqDb, inbox: str) -> list[str]:
    row = db.one("SELECT home_stores FROM shoppers WHERE inbox = ?", (inbox,))
    return [] if row is None else [str(s) for s in json.loads(row[0])]
