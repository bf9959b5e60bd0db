"""The till desk: redeeming single-use codes once, and the purchase feed.

:meth:`TillDesk.redeem` checks a code (:mod:`aislecast.kernel.redeem`) under the till's
store key, trying that store's campaigns and variants; then other stores' keys, only to
name a code minted elsewhere ``foreign_store``. A good code is consumed by inserting
its row into ``redemptions`` (primary key: the code), so of two tills racing, even on
two HQ workers, exactly one wins. The same ``(till, txn)`` again gets the same success
(a till that lost the answer retries); any other transaction gets ``used``. Each
success writes one ``offer_redeemed`` event (reason ``till``) under an id derived from
the code, so a replay never counts twice. A refusal HQ can pin on a campaign (``used``,
``foreign_store``, ``forged`` with a serial this store published) is also stored in
``code_refusals`` for the ``code_refusals`` auto-pause rule (:mod:`hq.autopause`).

:meth:`TillDesk.purchases` stores basket lines in ``purchases`` (idempotent by till,
transaction and line number). A line whose member id HQ does not know is kept with
``inbox`` NULL: an anonymous sale that still counts for the store.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger
from aislecast.kernel.redeem import CodeError, ParsedCode, parse_code, serial_of_offer, verify_tag
from aislecast.kernel.schema import Event
from hq.db import HqDb
from hq.redeem_keys import RedeemKeys

__all__ = ["MAX_LINES", "BasketLine", "LoyaltyTaken", "PurchaseFeed", "RedeemReason",
           "RedeemRequest", "Redeemed", "TillDesk", "TillRefused", "TillStats", "inbox_of",
           "link_loyalty", "member_of", "redemption_event_id", "unlink_loyalty"]

log = get_logger(__name__)

RedeemReason = Literal["forged", "expired", "used", "foreign_store", "unknown_till"]
#: the most basket lines one purchase call takes (a big shop is ~100 lines)
MAX_LINES: Final = 500
_CAMPAIGNS_TTL_S: Final = 5.0
_Id = msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")


class RedeemRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(max_length=64)]  # junk in it: "forged"
    txn: Annotated[str, _Id]
    store: str | None = None  # only needed by a till token scoped to several stores


class BasketLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    value_cents: Annotated[int, msgspec.Meta(ge=-10_000_000, le=10_000_000)]
    product: Annotated[str, _Id] | None = None
    category: Annotated[str, _Id] | None = None


class PurchaseFeed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    txn: Annotated[str, _Id]
    lines: list[BasketLine]
    member: Annotated[str, _Id] | None = None  # a member id, or a linked loyalty id
    # unix seconds, 2000-01-01 .. 2100-01-01 (a till that was offline sends them late);
    # default: when HQ receives the call
    ts: Annotated[float, msgspec.Meta(ge=946_684_800, le=4_102_444_800)] | None = None
    store: str | None = None


class TillRefused(Exception):
    """A refused redemption: ``reason`` (stable) and ``status`` for HTTP."""

    STATUS: Final = {"forged": 422, "expired": 410, "used": 409, "foreign_store": 403,
                     "unknown_till": 403}

    def __init__(self, reason: RedeemReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, self.STATUS[reason]


class Redeemed(msgspec.Struct, frozen=True):
    code: str
    store: str
    campaign: str
    variant: str
    offer: str | None
    inbox: str | None
    txn: str
    redeemed_at: float
    replay: bool = False


@dataclass(slots=True)
class TillStats:
    redeemed: int = count("till codes redeemed (consumed once)")
    replays: int = count("redemptions replayed by the same till transaction (same answer)")
    refused: dict[str, int] = by("reason", "till redemptions refused, per reason")
    attributed: dict[str, int] = by("reason", "refused redemptions pinned on a campaign "
                                    "(what the code_refusals auto-pause rule counts)")
    unbound: int = count("redemptions whose offer HQ had not yet heard published")
    bound_late: int = count("such redemptions bound once the offer's batch came")
    purchase_lines: int = count("purchase lines stored")
    purchase_duplicates: int = count("purchase lines sent again (same till, txn, line)")
    anonymous_lines: int = count("purchase lines of unknown members, kept as anonymous sales")


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def redemption_event_id(code: str) -> str:
    return "tr" + hashlib.sha256(code.encode()).hexdigest()[:30]


def member_of(db: HqDb, inbox: str) -> str:
    """The shopper's member id for the wallet's member QR, issued once: ``M`` and 16
    base32 letters (80 random bits), opaque, mapped to the inbox only here at HQ."""
    row = db.one("SELECT member FROM members WHERE inbox = ?", (inbox,))
    if row is not None:
        return str(row[0])
    member = "M" + base64.b32encode(secrets.token_bytes(10)).decode()
    db.execute("INSERT INTO members (member, inbox, created_at) VALUES (?, ?, ?)"
               " ON CONFLICT (inbox) DO NOTHING", (member, inbox, time.time()))
    got = db.one("SELECT member FROM members WHERE inbox = ?", (inbox,))
    assert got is not None
    return str(got[0])


class LoyaltyTaken(Exception):
    """The loyalty id is linked to another shopper already."""


def link_loyalty(db: HqDb, inbox: str, loyalty: str) -> bool:
    """Link a loyalty card number to the shopper; True if new, False if it was already
    theirs; :class:`LoyaltyTaken` if another shopper has it."""
    fresh = db.execute("INSERT INTO loyalty_ids (loyalty, inbox, created_at) VALUES (?, ?, ?)"
                       " ON CONFLICT (loyalty) DO NOTHING", (loyalty, inbox, time.time()))
    if fresh:
        return True
    row = db.one("SELECT inbox FROM loyalty_ids WHERE loyalty = ?", (loyalty,))
    if row is None or row[0] != inbox:
        raise LoyaltyTaken(loyalty)
    return False


def unlink_loyalty(db: HqDb, inbox: str, loyalty: str) -> bool:
    """Unlink a loyalty card number from the shopper; False if it was not linked to them
    (not linked at all, or to someone else: the caller cannot tell which). Purchase lines
    stored before keep their shopper; a line carrying the number after is anonymous."""
    return bool(db.execute("DELETE FROM loyalty_ids WHERE loyalty = ? AND inbox = ?",
                           (loyalty, inbox)))


def inbox_of(db: HqDb, member: str) -> str | None:
    """The shopper behind a member id or a linked loyalty id; None: unknown."""
    row = db.one("SELECT inbox FROM members WHERE member = ?", (member,)) or db.one(
        "SELECT inbox FROM loyalty_ids WHERE loyalty = ?", (member,))
    return None if row is None else str(row[0])


class TillDesk:
    """Redemptions and purchases on ``db``, codes checked with the keys ``keys()``
    returns (None: HQ has no redemption key, as an app built without
    :class:`hq.server.HqServer`; codes are then refused ``forged``)."""

    def __init__(self, db: HqDb, keys: Callable[[], RedeemKeys | None]) -> None:
        self.db = db
        self._keys = keys
        self.stats = TillStats()
        self._variants: list[tuple[str, str, tuple[str, ...]]] = []
        self._variants_at = -_CAMPAIGNS_TTL_S
        self._unbound, self._unbound_at = False, -_CAMPAIGNS_TTL_S

    # ---- redemption ---------------------------------------------------------------
    def refuse(self, reason: RedeemReason, detail: str, *, till: str, code: str,
               store: str = "", campaign: str | None = None,
               now: float | None = None) -> TillRefused:
        """Count (and log) a refusal; one HQ can pin on a ``campaign`` is also stored in
        ``code_refusals``, which the ``code_refusals`` auto-pause rule reads."""
        self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
        log.warning("redemption refused", reason=reason, till=till, code=code[:8],
                    campaign=campaign)
        if campaign is not None:
            self.db.execute("INSERT INTO code_refusals (ts, store, campaign, reason, till, code)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            (time.time() if now is None else now, store, campaign, reason,
                             till, code))
            self.stats.attributed[reason] = self.stats.attributed.get(reason, 0) + 1
        return TillRefused(reason, detail)

    def _campaign_variants(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(campaign, variant, stores) of every campaign, re-read every few seconds (any
        status: an offer stays redeemable after its campaign is paused)."""
        now = time.monotonic()
        if now - self._variants_at >= _CAMPAIGNS_TTL_S:
            out = []
            for (body,) in self.db.query("SELECT body FROM campaigns"):
                c = msgspec.json.decode(body)
                out += [(c["id"], cr["id"], tuple(c.get("stores", [])))
                        for cr in c.get("creatives", [])]
            self._variants, self._variants_at = out, now
        return self._variants

    def _key(self, store: str) -> bytes:
        keys = self._keys()
        return b"" if keys is None else keys.of(store)

    def _match(self, p: ParsedCode, store: str) -> tuple[str, str] | None:
        key = self._key(store)
        if not key:
            return None
        for cid, vid, stores in self._campaign_variants():
            if store in stores and verify_tag(key, p, store=store, campaign=cid, variant=vid):
                return cid, vid
        return None

    def _minted_elsewhere(self, p: ParsedCode, store: str) -> str | None:
        """The campaign of a code that verifies under another store's key, if any."""
        if self._keys() is None:
            return None
        return next((cid for cid, vid, stores in self._campaign_variants() for s in stores
                     if s != store and verify_tag(self._key(s), p, store=s, campaign=cid,
                                                  variant=vid)), None)

    def _misprinted(self, p: ParsedCode, store: str) -> str | None:
        """The campaign of the offer this store published under the code's serial, for a
        code whose tag fails: the letters of a real code, altered (a misprint, a typo
        past the usual misreadings, or tampering). A made-up serial names no offer."""
        lo = p.serial.hex()
        row = self.db.one("SELECT campaign FROM events WHERE offer >= ? AND offer < ?"
                          " AND kind = 'offer_published' AND store = ?", (lo, lo + "g", store))
        return None if row is None or row[0] is None else str(row[0])

    def _offer(self, p: ParsedCode, store: str, campaign: str) -> tuple[str | None, str | None]:
        """The offer whose id starts with the code's serial, if its batch has come."""
        lo = p.serial.hex()
        row = self.db.one("SELECT offer, inbox FROM events WHERE offer >= ? AND offer < ?"
                          " AND kind = 'offer_published' AND store = ? AND campaign = ?",
                          (lo, lo + "g", store, campaign))
        return (None, None) if row is None else (row[0], row[1])

    def _replay_or_used(self, code: str, till: str, txn: str, now: float) -> Redeemed | None:
        row = self.db.one("SELECT store, campaign, variant, offer, inbox, till, txn, ts"
                          " FROM redemptions WHERE code = ?", (code,))
        if row is None:
            return None
        if (row[5], row[6]) != (till, txn):
            raise self.refuse("used", f"code: already redeemed at {_utc(float(row[7]))}",
                              till=till, code=code, store=str(row[0]), campaign=str(row[1]),
                              now=now)
        self.stats.replays += 1
        return Redeemed(code, row[0], row[1], row[2], row[3], row[4], txn, float(row[7]), True)

    def redeem(self, code: str, *, store: str, till: str, txn: str,
               now: float | None = None) -> tuple[Redeemed, Event]:
        """Consume ``code`` for ``till`` (a till token's id) at ``store``, or raise
        :class:`TillRefused`; returns the answer and its ``offer_redeemed`` event."""
        now = time.time() if now is None else now
        try:
            p = parse_code(code)
        except CodeError as exc:
            raise self.refuse("forged", f"code: not a till code ({exc})", till=till,
                              code=code) from None
        got = self._match(p, store)
        if got is None:
            elsewhere = self._minted_elsewhere(p, store)
            if elsewhere is not None:
                raise self.refuse("foreign_store", f"code: issued by another store, not {store}",
                                  till=till, code=p.code, store=store, campaign=elsewhere,
                                  now=now)
            raise self.refuse("forged", "code: does not verify (mistyped or made up)",
                              till=till, code=p.code, store=store,
                              campaign=self._misprinted(p, store), now=now)
        campaign, variant = got
        if p.expires_at <= now:  # its own transaction replayed still gets its answer
            done = self._replay_or_used(p.code, till, txn, now)
            if done is None:
                raise self.refuse("expired", f"code: expired at {_utc(p.expires_at)}",
                                  till=till, code=p.code)
        else:  # the insert is the check: a code already there was used (or is ours)
            offer, inbox = self._offer(p, store, campaign)
            fresh = self.db.execute(
                "INSERT INTO redemptions (code, store, campaign, variant, serial, offer, inbox,"
                " expires_at, till, txn, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (code) DO NOTHING", (p.code, store, campaign, variant,
                                                   p.serial.hex(), offer, inbox, p.expires_at,
                                                   till, txn, now))
            if fresh:
                done = Redeemed(p.code, store, campaign, variant, offer, inbox, txn, now)
                self.stats.redeemed += 1
                self.stats.unbound += offer is None
                self._unbound = self._unbound or offer is None
                log.info("code redeemed", store=store, campaign=campaign, till=till,
                         bound=offer is not None)
            else:
                replayed = self._replay_or_used(p.code, till, txn, now)
                assert replayed is not None, "the insert found the code's row"
                done = replayed
        event = Event(id=redemption_event_id(done.code), kind="offer_redeemed",
                      ts=done.redeemed_at, store=done.store, campaign=done.campaign,
                      variant=done.variant, offer=done.offer, inbox=done.inbox, reason="till")
        return done, event

    def _any_unbound(self) -> bool:
        """Whether some redemption waits for its offer: this worker knows at once of its
        own, and asks the database (a partial index) every few seconds for other
        workers'; so at steady state ingest pays no query per batch."""
        now = time.monotonic()
        if not self._unbound and now - self._unbound_at >= _CAMPAIGNS_TTL_S:
            self._unbound = self.db.one(
                "SELECT 1 FROM redemptions WHERE offer IS NULL LIMIT 1") is not None
            self._unbound_at = now
        return self._unbound

    def on_events(self, events: list[Event]) -> None:
        """Ingest's listener: bind redemptions made before their offer's batch came (an
        indexed query per batch that publishes code-bearing offers, while any wait)."""
        published = {serial_of_offer(e.offer): e for e in events
                     if e.kind == "offer_published" and e.reason == "till_code" and e.offer}
        if not published or not self._any_unbound():
            return
        marks = ",".join("?" * len(published))
        rows = self.db.query("SELECT code, serial, store, campaign FROM redemptions"  # noqa: S608
                             f" WHERE offer IS NULL AND serial IN ({marks})", list(published))
        for code, serial, store, campaign in rows:
            e = published[serial]
            if (e.store, e.campaign) != (store, campaign):
                continue
            self.db.execute("UPDATE redemptions SET offer = ?, inbox = ? WHERE code = ?",
                            (e.offer, e.inbox, code))
            eid = redemption_event_id(code)
            row = self.db.one("SELECT body FROM events WHERE id = ?", (eid,))
            if row is not None:
                bound = msgspec.structs.replace(msgspec.json.decode(row[0], type=Event),
                                                offer=e.offer, inbox=e.inbox)
                self.db.execute("UPDATE events SET offer = ?, inbox = ?, body = ? WHERE id = ?",
                                (e.offer, e.inbox, msgspec.json.encode(bound).decode(), eid))
            self.stats.bound_late += 1
            log.info("redemption bound to its offer", store=store, campaign=campaign)
        self._unbound, self._unbound_at = False, -_CAMPAIGNS_TTL_S  # re-read at the next batch

    # ---- purchases ----------------------------------------------------------------
    def purchases(self, feed: PurchaseFeed, *, store: str, till: str,
                  now: float | None = None) -> dict[str, object]:
        """Store ``feed``'s lines (idempotent by till, txn and line number)."""
        ts = feed.ts if feed.ts is not None else (time.time() if now is None else now)
        inbox = None if feed.member is None else inbox_of(self.db, feed.member)
        rows = [(hashlib.sha256(f"{store}|{till}|{feed.txn}|{i}".encode()).hexdigest()[:32],
                 store, inbox, feed.member, ts, till, feed.txn, ln.product, ln.category,
                 ln.quantity, ln.value_cents, i) for i, ln in enumerate(feed.lines)]
        stored = self.db.executemany(
            "INSERT INTO purchases (id, store, inbox, member, ts, till, txn, product, category,"
            " quantity, value_cents, line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING", rows)
        self.stats.purchase_lines += stored
        self.stats.purchase_duplicates += len(rows) - stored
        if inbox is None:
            self.stats.anonymous_lines += stored
            if feed.member is not None and stored:
                log.info("purchase of an unknown member kept as anonymous sales", store=store,
                         till=till, lines=stored)
        return {"txn": feed.txn, "store": store, "lines": len(rows), "stored": stored,
                "member": "known" if inbox is not None else (
                    "unknown" if feed.member is not None else "none")}
