"""A shopper's rights at HQ: enrolment, consent changes, export and erasure, and the
signed deltas that carry them to the gateways in seconds.

* **Enrol** (:meth:`ShopperRights.enroll`): the shopper row, the consent history, a
  broker login, the shopper's own API token (kind ``shopper``, owner = inbox, stored as
  its SHA-256 like every token) and, when offers are granted, a delta admitting the
  shopper (``opt_ins`` + their ``tokens``) to the stores that receive them
  (:func:`hq.scope.stores_of`: the home stores; none without one, where the first
  visit admits them, :mod:`hq.first_visit`).
* **Change** (:meth:`ShopperRights.change`): one consent row; granting ``offers`` sends
  the admitting delta to the shopper's stores only, withdrawing it an ``opt_outs``
  delta to every store (a gateway may hold them from a delta of any time).
  Withdrawing ``personalisation`` sends an ``unprofiled`` delta to the shopper's stores
  (their gateways drop the profile at once); granting it again rebuilds the profile
  and sends it in the admitting delta. ``analytics`` needs no delta: HQ's ingest stores
  the shopper's later events without the inbox (:mod:`hq.purposes`).
* **Export** (:meth:`ShopperRights.export`): everything HQ holds about the inbox.
* **Erase** (:meth:`ShopperRights.erase`): see :meth:`ShopperRights.erase`.

Who may: an admin or the wallet's service token for any shopper; a shopper's own token
for that shopper only. Any other inbox, or one that does not exist, is the same 404.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec

from aislecast.kernel.logs import get_logger
from hq.accounts import Accounts, Principal
from hq.consent import (
    Purpose,
    Source,
    check_purposes,
    consent_history,
    current_consents,
    record_consent,
)
from hq.db import HqDb
from hq.inbox_index import of_inbox
from hq.lead_score import lead_score_of
from hq.leads import shopper_leads
from hq.learning import profiles
from hq.scope import store_rows, stores_of
from hq.service import Enrollment, HqService, NotFound, check_id

__all__ = ["ERASED", "ShopperRights", "source_of"]

log = get_logger(__name__)

#: What an erased shopper's pseudonym becomes in the audit log.
ERASED: Final = "shopper:[erased]"
_ANY_SHOPPER: Final = frozenset({"admin", "wallet"})


def source_of(p: Principal) -> Source:
    """The consent history's ``source`` for a change made by ``p``."""
    if p.role in {"shopper", "wallet"}:
        return "wallet"
    return "admin" if p.role == "admin" else "api"


def _scrubbed(body: str, inbox: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return "{}"
    if isinstance(doc, dict):
        doc.pop("inbox", None)
        offer = doc.get("offer")
        if isinstance(offer, dict) and offer.get("inbox") == inbox:
            offer.pop("inbox")
    return json.dumps(doc, separators=(",", ":"))


def _erase_rows(db: HqDb, inbox: str) -> tuple[str, int, int]:
    """HQ's rows of ``inbox`` deleted, their events anonymised, one tombstone written, in
    one transaction; returns ``(erasure id, consent rows, events anonymised)``."""
    eid = uuid.uuid4().hex
    with db.transaction(immediate=True):
        changes = int(db.one("SELECT count(*) FROM consent_history WHERE inbox = ?", (inbox,))[0])  # type: ignore[index]
        cond, params = of_inbox(db, inbox)
        events = db.query(f"SELECT id, body FROM events WHERE {cond}", params)  # noqa: S608
        for event_id, body in events:
            db.execute("UPDATE events SET inbox = NULL, body = ? WHERE id = ?",
                       (_scrubbed(body, inbox), event_id))
        # till data: sales stay for the store as anonymous ones (inbox and member
        # dropped), redemptions stay counted without the shopper; the ids that linked a
        # till to the pseudonym (member QR, loyalty card) go
        db.execute("UPDATE purchases SET inbox = NULL, member = NULL WHERE inbox = ?", (inbox,))
        db.execute("UPDATE redemptions SET inbox = NULL WHERE inbox = ?", (inbox,))
        # reach (hq.reach): the shopper no longer counts among a campaign's shoppers;
        # SQLite's index of a shopper's events (hq.inbox_index): its triggers dropped the
        # rows of the events above, and any row left naming the inbox (rowids renumbered
        # under it) goes too
        tables = ("consent_history", "profiles", "members", "loyalty_ids", "leads",
                  "shopper_stores", "reach", "shoppers",
                  *(("events_by_inbox",) if db.dialect == "sqlite" else ()))
        for table in tables:
            db.execute(f"DELETE FROM {table} WHERE inbox = ?", (inbox,))  # noqa: S608 - constants
        db.execute("DELETE FROM broker_users WHERE username = ? AND kind = 'phone'", (inbox,))
        db.execute("DELETE FROM api_tokens WHERE kind = 'shopper' AND owner = ?", (inbox,))
        db.execute("UPDATE audit SET object = ? WHERE object = ?", (ERASED, f"shopper:{inbox}"))
        db.execute("UPDATE audit SET actor = ? WHERE actor = ?", (ERASED, f"shopper:{inbox}"))
        db.execute("INSERT INTO erasures (id, at, consent_changes, events) VALUES (?, ?, ?, ?)",
                   (eid, time.time(), changes, len(events)))
    return eid, changes, len(events)


class ShopperRights:
    def __init__(self, service: HqService, accounts: Accounts) -> None:
        self.service = service
        self.accounts = accounts
        self.db = service.db

    # ---- who ----------------------------------------------------------------------------
    def check_access(self, p: Principal, inbox: str) -> None:
        """Raise :class:`NotFound` unless ``p`` may act for ``inbox`` and it exists; the
        answer is the same for "not yours" and "no such shopper"."""
        mine = p.role in _ANY_SHOPPER or (p.role == "shopper" and p.actor == f"shopper:{inbox}")
        if not mine or check_id("inbox", inbox) or current_consents(self.db, inbox) is None:
            raise NotFound("shopper", inbox)

    # ---- enrol and consent ------------------------------------------------------------
    def enroll(self, consents: list[str], home_stores: list[str], *, source: Source) -> Enrollment:
        """Blocking (hashes the broker password): call it off the event loop."""
        e = self.service.enroll(consents, home_stores, source=source)
        _, secret = self.accounts.issue_token("shopper", name="shopper", owner=e.inbox)
        return msgspec.structs.replace(e, api_token=secret)

    async def enroll_admitted(self, consents: list[str], home_stores: list[str], *,
                              source: Source, audited: Callable[[Enrollment], None]) -> Enrollment:
        """Enrol (off the event loop, ``audited(e)`` in the same worker thread), then,
        with ``offers`` granted, the admitting delta: what every enrolment route does."""
        def enroll_audited() -> Enrollment:
            e = self.enroll(consents, home_stores, source=source)
            audited(e)
            return e

        e = await asyncio.to_thread(enroll_audited)
        if "offers" in e.consents:  # their gateways know them in seconds, not at the next bundle
            await self.admit(e.inbox)
        return e

    def _stores_of(self, inbox: str) -> list[str]:
        return stores_of(self.db, inbox)

    async def _fan_out(self, stores: list[str], what: str, **fields: Any) -> list[str]:
        """One delta per store, concurrently; returns the stores it could not reach."""
        results = await asyncio.gather(*(self.service.publish_delta(s, **fields) for s in stores),
                                       return_exceptions=True)
        failed = [s for s, r in zip(stores, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            log.warning("consent delta not published", what=what, stores=failed[:10])
        return failed

    async def admit(self, inbox: str) -> list[str]:
        """The delta that lets ``inbox``'s tokens resolve at their stores' gateways now
        (the stores that receive them, :mod:`hq.scope`; no other store)."""
        tokens = self.service.shopper_tokens(inbox)
        return await self._fan_out(self._stores_of(inbox), "admit", opt_ins=[inbox], tokens=tokens,
                                   profiles=self.service.shopper_profiles([inbox]))

    async def change(self, inbox: str, purpose: str, granted: bool, *,
                     source: Source) -> dict[str, Any]:
        self.service.refuse("consent", check_purposes("purpose", [purpose]))
        p: Purpose = purpose  # type: ignore[assignment]  # checked just above
        got = await asyncio.to_thread(record_consent, self.db, inbox, p, granted, source=source)
        if got is None:
            raise NotFound("shopper", inbox)
        consents, changed = got
        failed: list[str] = []
        if purpose == "offers" and changed:
            failed = (await self.admit(inbox) if granted else
                      await self._fan_out(self.service.store_ids(), "withdraw", opt_outs=[inbox]))
        elif purpose == "personalisation" and changed:
            failed = await self._personalisation(inbox, granted, offers="offers" in consents)
        return {"inbox": inbox, "consents": consents, "changed": changed,
                "unpublished_stores": failed}

    async def _personalisation(self, inbox: str, granted: bool, *, offers: bool) -> list[str]:
        """Withdrawn: the model forgets the profile and the shopper's stores get an
        ``unprofiled`` delta (hq.purposes). Granted again: the profile is built now and
        rides in the admitting delta (with offers granted; else in the next bundle)."""
        model = self.service.model
        if model is not None:
            kept = {i: p for i, p in model.profiles.items() if i != inbox}
            if granted:
                kept |= await asyncio.to_thread(profiles, self.service, only=inbox)
            self.service.model = msgspec.structs.replace(model, profiles=kept)
        if granted:
            return await self.admit(inbox) if offers else []
        return await self._fan_out(self._stores_of(inbox), "unprofile", unprofiled=[inbox])

    # ---- export --------------------------------------------------------------------------
    def export(self, inbox: str) -> dict[str, Any]:
        """Everything HQ holds about ``inbox`` (blocking: call it off the event loop)."""
        db = self.db
        row = db.one("SELECT inbox, consents, opted_out, created_at, home_stores FROM shoppers"
                     " WHERE inbox = ?", (inbox,))
        if row is None:
            raise NotFound("shopper", inbox)
        profile = db.one("SELECT segments, tier FROM profiles WHERE inbox = ?", (inbox,))
        broker = self.service.credentials.get(inbox)
        tokens = db.query("SELECT id, created_at, revoked_at FROM api_tokens WHERE kind = 'shopper'"
                          " AND owner = ?", (inbox,))
        cond, params = of_inbox(db, inbox)
        events = db.query(f"SELECT body FROM events WHERE {cond} ORDER BY ts, id", params)  # noqa: S608
        audit = db.query("SELECT ts, action, actor FROM audit WHERE object = ? ORDER BY ts",
                         (f"shopper:{inbox}",))
        member = db.one("SELECT member FROM members WHERE inbox = ?", (inbox,))
        loyalty = db.query("SELECT loyalty FROM loyalty_ids WHERE inbox = ?", (inbox,))
        purchases = db.query("SELECT store, ts, txn, product, category, quantity, value_cents"
                             " FROM purchases WHERE inbox = ? ORDER BY ts, id", (inbox,))
        redeemed = db.query("SELECT store, campaign, offer, ts FROM redemptions WHERE inbox = ?"
                            " ORDER BY ts", (inbox,))
        reached = db.query("SELECT campaign, store, variant, kind, ts FROM reach WHERE inbox = ?"
                           " ORDER BY campaign, kind, store, variant", (inbox,))
        return {
            "exported_at": time.time(),
            "shopper": {"inbox": row[0], "consents": [c for c in str(row[1]).split(",") if c],
                        "opted_out": bool(row[2]), "created_at": float(row[3]),
                        "home_stores": json.loads(row[4])},
            "stores": store_rows(db, inbox),  # which stores receive them, and last seen (hq.scope)
            "consent_history": msgspec.to_builtins(consent_history(db, inbox)),
            "profile": None if profile is None else {"segments": [s for s in profile[0].split(",") if s],
                                                     "tier": profile[1]},
            "broker_user": None if broker is None else {
                "username": broker.username, "kind": broker.kind, "created_at": broker.created_at,
                "revoked_at": broker.revoked_at},
            "api_tokens": [{"id": t[0], "created_at": float(t[1]), "revoked_at": t[2]} for t in tokens],
            "events": [json.loads(e[0]) for e in events],
            "audit": [{"ts": float(a[0]), "action": a[1], "actor": a[2]} for a in audit],
            "member": None if member is None else member[0],
            "loyalty_ids": [r[0] for r in loyalty],
            "purchases": [{"store": r[0], "ts": float(r[1]), "txn": r[2], "product": r[3],
                           "category": r[4], "quantity": int(r[5]), "value_cents": int(r[6])}
                          for r in purchases],
            "redemptions": [{"store": r[0], "campaign": r[1], "offer": r[2], "ts": float(r[3])}
                            for r in redeemed],
            "leads": shopper_leads(db, inbox),  # the forms submitted (hq.leads)
            # where they count among a campaign's shoppers (hq.reach; "" store or
            # variant: the whole campaign's row)
            "reach": [{"campaign": r[0], "store": r[1], "variant": r[2], "kind": r[3],
                       "ts": float(r[4])} for r in reached],
            "lead_score": lead_score_of(db, inbox),  # hq.learning's, as the gateways get it
        }

    # ---- erase ---------------------------------------------------------------------------
    async def erase(self, inbox: str) -> dict[str, Any]:
        """Erase ``inbox``: the broker login revoked first (the broker refuses it once its
        files are rendered again, which the revocation triggers), then in one transaction
        the shopper, profile, consent history, shopper tokens, broker user and reach
        rows deleted, their events kept without the pseudonym (analytics count them
        anonymously, as events, no longer as a shopper), the
        audit log's mentions replaced by :data:`ERASED` and one anonymous tombstone
        (``erasures``: when, how many consent rows and events); then a delta to every
        store that makes each gateway purge the pseudonym (gateway.consent)."""
        if current_consents(self.db, inbox) is None:
            raise NotFound("shopper", inbox)
        for tid, in self.db.query("SELECT id FROM api_tokens WHERE kind = 'shopper' AND owner = ?"
                                  " AND revoked_at IS NULL", (inbox,)):
            self.accounts.revoke_token(tid)  # and the token cache forgets it now
        self.service.credentials.revoke(inbox)
        eid, changes, events = await asyncio.to_thread(_erase_rows, self.db, inbox)
        self.service.forget_shopper(inbox)
        for fn in self.service.shopper_listeners:
            fn(inbox)
        failed = await self._fan_out(self.service.store_ids(), "erase", opt_outs=[inbox],
                                     erased=[inbox])
        log.info("shopper erased", erasure=eid, consent_changes=changes, events=events)
        return {"erasure": eid, "consent_changes": changes, "events_anonymised": events,
                "unpublished_stores": failed}
