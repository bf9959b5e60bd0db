"""Pseudonyms for the gateway's edge storage: no shopper's inbox on disk, and no link
between one shopper's days.

The cap ledger (:mod:`gateway.caps`) and the visit book (:mod:`gateway.visits`) keep
rows about shoppers in the gateway's SQLite file. They key those rows by pseudonyms,
never by the inbox:

* **Day pseudonym**: ``HMAC-SHA256(day_key, inbox)``, first 16 bytes in hex. Every local
  day of the store has its own random 32-byte key, created on first use. Only today's
  and yesterday's keys exist: when a new day starts (:meth:`Pseudonyms.advance`) every
  older key is overwritten and deleted, and the ledger and the visit book delete every
  row made under it, so nothing on disk outlives its key.
* **Visit tag**: ``HMAC(day_key, inbox|visit)`` for the per-visit counts (the inbox is
  part of the message, so a visit id seen in the ``visits`` table cannot be tested
  against the charges of another day).
* **Lifetime pseudonym**: ``HMAC(life_key, inbox|campaign)`` with one key that never
  rotates, for the per-campaign "ever" counts. Those rows (``cap_lifetime``) hold a
  campaign, the pseudonym and a count: no time, no day, no visit.

What a thief who takes the disk (the SQLite file and the key files) can and cannot do:

* Within a day, link: all of one shopper's charges and their visit of that day share
  one pseudonym, with times (the cooldowns and per-day caps need them).
* Across days, not: a pseudonym of yesterday and one of today are unrelated HMAC values,
  and the keys of the days before yesterday, and their rows, are gone. The one residue
  is timing: a shopper present across midnight shows as a visit ending after midnight
  under yesterday's pseudonym and charges starting right after it under today's.
* Lifetime counts carry no time or day, and their pseudonym uses another key and the
  campaign, so a ``cap_lifetime`` row cannot be joined to a day's rows, nor the rows of
  two campaigns to each other.
* The keys are on the same disk (0600 files, owner only), so a thief who *already knows*
  an inbox can recompute its pseudonyms and find that shopper's rows of today and
  yesterday and their lifetime counts. Without the inbox (a random token) they cannot.
* Deleting is best effort: the key file is overwritten before it is unlinked and SQLite
  runs with ``secure_delete``, but an SD card's wear levelling may keep old blocks.

Keys live in ``<database file>.keys/`` (``day-YYYY-MM-DD.key``, ``life.key``); a database
in memory keeps them in memory. :func:`pseudonyms_for` gives every user of one
connection the same instance. See docs/architecture.md#edge-storage-pseudonyms.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import os
import sqlite3
import zoneinfo
from pathlib import Path
from typing import Final

from aislecast.kernel.privatefile import write_private

__all__ = ["CACHE_MAX", "KEY_BYTES", "LIFETIME_CACHE_MAX", "PSEUDONYM_BYTES", "DayIds", "Pseudonyms",
           "day_before", "key_dir_for", "pseudonyms_for"]

log = logging.getLogger("aislecast.gateway.pseudonyms")

KEY_BYTES: Final = 32
PSEUDONYM_BYTES: Final = 16
#: shoppers whose day pseudonyms are cached (cleared when full and at each new day):
#: ~340 bytes each, so at most ~2.7 MiB (65,536 were up to 22 MiB of a gateway's RSS);
#: a store's shoppers of one day fit, and a miss costs two HMACs
CACHE_MAX: Final = 8_192
#: (shopper, campaign) lifetime pseudonyms cached (cleared when full and at each new
#: day): ~250 bytes each, at most ~1 MiB. Offers are rare next to adverts, a miss is one HMAC.
LIFETIME_CACHE_MAX: Final = 4_096
_LIFE: Final = "life.key"
_PREFIX: Final = "day-"
_SUFFIX: Final = ".key"


def day_before(day: str) -> str:
    """The ISO date before ``day`` (``YYYY-MM-DD``)."""
    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


_MACS: dict[bytes, hmac.HMAC] = {}  # key -> its HMAC state before any message (copied)


def _mac(key: bytes, msg: str) -> str:
    """HMAC-SHA256 of ``msg`` under ``key``, first ``PSEUDONYM_BYTES`` in hex."""
    base = _MACS.get(key)
    if base is None:
        if len(_MACS) >= 8:  # a few live keys: today's, yesterday's, the lifetime key
            _MACS.clear()
        base = _MACS[key] = hmac.new(key, digestmod=hashlib.sha256)
    h = base.copy()
    h.update(msg.encode())
    return h.digest()[:PSEUDONYM_BYTES].hex()


class DayIds:
    """One shopper's pseudonyms of today and yesterday (None: no key for yesterday),
    and the tags of their current visit, cached by :meth:`Pseudonyms.ids`."""

    __slots__ = ("inbox", "today", "visit", "vtag", "vtag_y", "yesterday")

    def __init__(self, inbox: str, today: str, yesterday: str | None) -> None:
        self.inbox, self.today, self.yesterday = inbox, today, yesterday
        self.visit: str | None = None
        self.vtag = ""
        self.vtag_y: str | None = None


class Pseudonyms:
    """Day keys (today's and yesterday's only) and the lifetime key, in ``key_dir``
    (None: in memory), and the pseudonyms made with them."""

    def __init__(self, key_dir: Path | None, *, tz: str = "UTC") -> None:
        self.key_dir = key_dir
        self.tz = tz  # the store's: a day is its local date (the engine sets it)
        self._keys: dict[str, bytes] = {}  # day -> key
        self._life: bytes | None = None
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}
        self._bucket: tuple[str, int, str] | None = None  # (tz, minute, day) of the last call
        self._ids: dict[str, DayIds] = {}
        self._lifetime: dict[tuple[str, str], str] = {}
        self.destroyed = 0  # day keys destroyed so far
        self.today: str | None = None
        self.yesterday: str | None = None
        if key_dir is not None and key_dir.is_dir():
            for p in key_dir.glob(f"{_PREFIX}*{_SUFFIX}"):
                day = p.name[len(_PREFIX):-len(_SUFFIX)]
                raw = p.read_bytes()
                if len(raw) == KEY_BYTES and _iso(day):
                    self._keys[day] = raw
        if self._keys:
            self.advance_day(max(self._keys))

    # ---- days -------------------------------------------------------------------------
    def day(self, ts: float) -> str:
        """The store's local date at unix time ``ts`` (cached per minute)."""
        minute = int(ts // 60)
        b = self._bucket
        if b is not None and b[0] == self.tz and b[1] == minute:
            return b[2]
        z = self._zones.get(self.tz)
        if z is None:
            z = self._zones[self.tz] = zoneinfo.ZoneInfo(self.tz)
        day = dt.datetime.fromtimestamp(minute * 60, z).date().isoformat()
        self._bucket = (self.tz, minute, day)
        return day

    def advance(self, ts: float) -> bool:
        """The gateway's clock says ``ts`` (local, trusted): a new day destroys every
        key older than yesterday. True when the day changed."""
        return self.advance_day(self.day(ts))

    def advance_day(self, day: str) -> bool:
        if self.today is not None and day <= self.today:
            return False
        self.today = day
        keep = self.yesterday = day_before(day)
        for old in [d for d in self._keys if d < keep]:
            self._destroy(old)
        self._ids.clear()
        self._lifetime.clear()  # it never needs a day, but would otherwise span all of them
        return True

    def clamp(self, day: str) -> str | None:
        """The key day for a charge of ``day``: later than today counts as today (a
        peer's clock ahead), yesterday as is; older (or not a date): None, no key."""
        if self.today is None:
            return None
        if day >= self.today:
            return self.today
        return day if day == self.yesterday else None

    # ---- keys -------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return None if self.key_dir is None else self.key_dir / name

    def _load_or_create(self, name: str) -> bytes:
        path = self._path(name)
        if path is not None and path.exists():
            raw = path.read_bytes()
            if len(raw) == KEY_BYTES:
                return raw
            log.warning("pseudonym key file has the wrong size, replaced path=%s", path)
        raw = os.urandom(KEY_BYTES)
        if path is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(path, raw)
        return raw

    def key(self, day: str, *, create: bool) -> bytes | None:
        """The key of ``day`` (today or yesterday only; created when ``create``)."""
        k = self._keys.get(day)
        if k is None and create and day in (self.today, self.yesterday):
            k = self._keys[day] = self._load_or_create(f"{_PREFIX}{day}{_SUFFIX}")
            self._ids.clear()  # cached entries may lack this day's pseudonym
        return k

    def days(self) -> list[str]:
        """The days whose keys exist, oldest first."""
        return sorted(self._keys)

    def _destroy(self, day: str) -> None:
        _MACS.pop(self._keys.pop(day), None)
        self.destroyed += 1
        path = self._path(f"{_PREFIX}{day}{_SUFFIX}")
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            with path.open("r+b") as f:  # overwrite, then unlink (best effort on flash)
                f.write(b"\0" * KEY_BYTES)
                f.flush()
                os.fsync(f.fileno())
            path.unlink()
        log.info("pseudonym day key destroyed day=%s", day)

    @property
    def life_key(self) -> bytes:
        if self._life is None:
            self._life = self._load_or_create(_LIFE)
        return self._life

    def has_life_key(self) -> bool:
        path = self._path(_LIFE)
        return self._life is not None or (path is not None and path.exists())

    # ---- pseudonyms -------------------------------------------------------------------
    def of(self, inbox: str, day: str, *, create: bool = True) -> str | None:
        """``inbox``'s pseudonym of ``day`` (None: that day has no key)."""
        k = self.key(day, create=create)
        return None if k is None else _mac(k, inbox)

    def visit_tag(self, inbox: str, visit: str, day: str) -> str | None:
        k = self.key(day, create=True)
        return None if k is None else _mac(k, f"{inbox}|{visit}")

    def ids(self, inbox: str, visit: str | None = None) -> DayIds:
        """Today's and yesterday's pseudonyms of ``inbox`` (and its tags of ``visit``),
        cached: two HMACs per shopper per day, two more per visit. Needs a day
        (:meth:`advance` first)."""
        e = self._ids.get(inbox)
        if e is None:
            today = self.today
            if today is None:
                raise RuntimeError("no day yet: call advance() first")
            y = self.yesterday
            e = DayIds(inbox, _mac(self.key(today, create=True) or b"", inbox),
                       None if y is None else self.of(inbox, y, create=False))
            if len(self._ids) >= CACHE_MAX:
                self._ids.clear()
            self._ids[inbox] = e
        if visit is not None and e.visit != visit:
            e.visit = visit
            msg = f"{inbox}|{visit}"
            e.vtag = _mac(self._keys[self.today or ""], msg)
            ky = self._keys.get(self.yesterday or "")
            e.vtag_y = None if ky is None else _mac(ky, msg)
        return e

    def lifetime(self, inbox: str, campaign: str) -> str:
        """The timestamp-free pseudonym of ``inbox`` for ``campaign``'s lifetime count."""
        k = (inbox, campaign)
        p = self._lifetime.get(k)
        if p is None:
            if len(self._lifetime) >= LIFETIME_CACHE_MAX:
                self._lifetime.clear()
            p = self._lifetime[k] = _mac(self.life_key, f"{inbox}|{campaign}")
        return p


def _iso(day: str) -> bool:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return len(day) == 10


def key_dir_for(conn: sqlite3.Connection) -> Path | None:
    """``<file>.keys`` next to the main database of ``conn``; None for one in memory."""
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return Path(f"{file}.keys") if file else None
    return None


# By key directory (one instance per database file in a process, however many
# connections open it); databases in memory by connection.
_REGISTRY: dict[str | int, Pseudonyms] = {}


def pseudonyms_for(conn: sqlite3.Connection) -> Pseudonyms:
    """The one :class:`Pseudonyms` of ``conn``'s database (the ledger, the visit book and
    the migration share it), with its keys next to the database file."""
    key_dir = key_dir_for(conn)
    handle: str | int = str(key_dir) if key_dir is not None else id(conn)
    ps = _REGISTRY.get(handle)
    if ps is None:
        ps = _REGISTRY[handle] = Pseudonyms(key_dir)
    return ps
