"""Going live needs an approval: draft -> submitted -> approved (live or scheduled) or rejected.

The policy is the chain's, per kind of campaign (``[approval]`` in hq.toml,
:class:`ApprovalPolicy`):

- ``none``: any editor's save makes a campaign live;
- ``single``: an approver's (or admin's) own save is the approval; a marketer saves
  drafts and submits them;
- ``four_eyes``: nobody's save makes anything live; a campaign is submitted and another
  person approves it (never the submitter).

Campaigns default to ``single``, flash campaigns to ``four_eyes``: a flash goes to every
shopper present at once, so a second person reads it first.

What an approval covers is the campaign's **content**: its body with ``status``, the
engine stamp and the budget grants (which HQ's allocator raises on its own) left out, as
the SHA-256 :func:`digest`. Pausing, resuming and saving the same content again never
need a new approval; any content change does (under ``single`` an approver's save is
it; a marketer may never rewrite a live campaign). A submission remembers the digest
it was made for: a campaign edited after it was submitted is not approved by the old
submission (409 ``changed_since_submit``). Every step is an audit entry with the
approval before and after and the comment.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Final, Literal

import msgspec

from aislecast.kernel.campaign import CAMPAIGN_ENGINE
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import Campaign
from hq.authz import LIVE_MAKERS
from hq.db import HqDb
from hq.refusals import Refused

__all__ = ["LIVE", "Approval", "ApprovalPolicy", "Approvals", "Decision", "Mode", "Submit",
           "digest", "gate"]

log = get_logger(__name__)

Mode = Literal["four_eyes", "single", "none"]
LIVE: Final = frozenset({"live", "scheduled"})
_COMMENT_MAX: Final = 2_000
_COLUMNS: Final = ("campaign, state, target, digest, submitted_by, submitted_at, comment,"
                   " decided_by, decided_at, decision_comment")


class ApprovalPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[approval]``: who must agree before a campaign goes live, per kind."""

    campaigns: Mode = "single"
    flash: Mode = "four_eyes"

    def mode_for(self, c: Campaign) -> Mode:
        return self.flash if c.scenario == "flash" else self.campaigns


class Approval(msgspec.Struct, frozen=True):
    """A campaign's latest approval round."""

    campaign: str
    state: Literal["submitted", "approved", "rejected"]
    target: str  # the status an approval gives it: live or scheduled
    digest: str  # the content submitted (and then approved)
    submitted_by: str
    submitted_at: float
    comment: str = ""
    decided_by: str | None = None
    decided_at: float | None = None
    decision_comment: str = ""


class Submit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/campaigns/{id}/submit``; ``status``: what approval makes it."""

    comment: str = ""
    status: Literal["live", "scheduled"] = "live"


class Decision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/campaigns/{id}/approve`` and ``/reject``."""

    comment: str = ""


def digest(c: Campaign) -> str:
    """The SHA-256 of ``c``'s content: status, engine and budget grants left out."""
    bare = msgspec.structs.replace(c, status="draft", engine=CAMPAIGN_ENGINE,
                                   budget=msgspec.structs.replace(c.budget, grants={}))
    # through JSON and back first: 600 and 600.0 are the same validity, stored or not
    canonical = msgspec.json.encode(msgspec.json.decode(msgspec.json.encode(bare), type=Campaign))
    return hashlib.sha256(canonical).hexdigest()


def _comment(text: str) -> str:
    if len(text) > _COMMENT_MAX:
        raise Refused(422, "bad_comment", f"comment: {len(text)} characters, at most {_COMMENT_MAX}")
    return text


def gate(policy: ApprovalPolicy, role: str, new: Campaign, before: Campaign | None,
         current: Approval | None) -> bool:
    """May a save by ``role`` store ``new`` (over ``before``)? Raises :class:`Refused`
    (403 ``needs_approver``, 409 ``needs_approval``) with the way forward; True: the
    save makes ``new`` live on the caller's own authority (``single``: an approver's
    save), to be recorded as approved by the caller; False: nothing to record."""
    d = digest(new)
    if (before is not None and before.status in LIVE and role not in LIVE_MAKERS
            and digest(before) != d):
        raise Refused(403, "needs_approver", f"campaign {new.id!r} is {before.status}: a {role} "
                      "may pause it but not rewrite it; pause it first, or ask an approver")
    if new.status not in LIVE:
        return False  # drafts and pauses never wait for anyone
    if current is not None and current.state == "approved":
        approved: str | None = current.digest
    else:  # live before approvals existed: its content as it was is grandfathered
        old_live = before is not None and before.status in LIVE and current is None
        approved = digest(before) if old_live and before is not None else None
    if approved == d:
        return False  # resume, or the same content again
    mode = policy.mode_for(new)
    if mode == "none":
        return False
    if mode == "single":
        if role in LIVE_MAKERS:
            return True
        raise Refused(403, "needs_approver",
                      f"status {new.status!r}: a {role} saves campaigns as draft or paused and "
                      "an approver makes them live; save it with \"status\": \"draft\" and "
                      f"POST /api/campaigns/{new.id}/submit")
    kind = "flash campaign" if new.scenario == "flash" else "campaign"
    raise Refused(409, "needs_approval",
                  f"a {kind} goes live only with four-eyes approval: save {new.id!r} as draft, "
                  f"POST /api/campaigns/{new.id}/submit, and another approver approves it")


class Approvals:
    """The approval rounds in HQ's database (table ``approvals``)."""

    def __init__(self, db: HqDb, policy: ApprovalPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or ApprovalPolicy()
        # after each stored round, with its campaign (whose stores say who may see it):
        # the console's live push (hq.live.LiveHub.on_approval)
        self.listeners: list[Callable[[Approval, Campaign], None]] = []

    def get(self, cid: str) -> Approval | None:
        row = self.db.one(f"SELECT {_COLUMNS} FROM approvals WHERE campaign = ?", (cid,))  # noqa: S608
        return None if row is None else _row(row)

    def listing(self, state: str | None = "submitted", limit: int = 500) -> list[Approval]:
        sql = f"SELECT {_COLUMNS} FROM approvals"  # noqa: S608 - constant columns
        args: list[object] = []
        if state is not None:
            sql, args = sql + " WHERE state = ?", [state]
        rows = self.db.query(sql + " ORDER BY submitted_at, campaign LIMIT ?", [*args, limit])
        return [_row(r) for r in rows]

    def put(self, a: Approval, c: Campaign) -> Approval:
        """Store ``a``, the latest round of campaign ``c``, and tell the listeners."""
        self.db.execute(
            f"INSERT INTO approvals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
            " ON CONFLICT (campaign) DO UPDATE SET state = excluded.state,"
            " target = excluded.target, digest = excluded.digest,"
            " submitted_by = excluded.submitted_by, submitted_at = excluded.submitted_at,"
            " comment = excluded.comment, decided_by = excluded.decided_by,"
            " decided_at = excluded.decided_at, decision_comment = excluded.decision_comment",
            (a.campaign, a.state, a.target, a.digest, a.submitted_by, a.submitted_at, a.comment,
             a.decided_by, a.decided_at, a.decision_comment))
        for fn in self.listeners:
            fn(a, c)
        return a

    def submit(self, c: Campaign, actor: str, req: Submit) -> Approval:
        """A new round for ``c`` as it is now: a draft or paused campaign (a live one is
        on air already: its edits are saved paused or as draft, then submitted, so that a
        rejection always leaves the campaign off)."""
        if c.status in LIVE:
            raise Refused(409, "already_live", f"campaign {c.id!r} is {c.status}: nothing to "
                          "submit; save an edit as draft or paused, then submit it")
        a = Approval(c.id, "submitted", req.status, digest(c), actor, time.time(),
                     _comment(req.comment))
        log.info("campaign submitted", campaign=c.id, actor=actor)
        return self.put(a, c)

    def self_approved(self, c: Campaign, actor: str) -> Approval:
        """An approver's own live save under ``single``, recorded as its approval."""
        now = time.time()
        return self.put(Approval(c.id, "approved", c.status, digest(c), actor, now,
                                  decided_by=actor, decided_at=now,
                                  decision_comment="saved live by an approver"), c)

    def _pending(self, c: Campaign) -> Approval:
        a = self.get(c.id)
        if a is None or a.state != "submitted":
            raise Refused(409, "not_submitted", f"campaign {c.id!r} is not waiting for approval "
                          f"({'never submitted' if a is None else a.state}); submit it first")
        if a.digest != digest(c):
            raise Refused(409, "changed_since_submit", f"campaign {c.id!r} was edited after it "
                          "was submitted; submit it again so that the approver sees this version")
        return a

    def approve(self, c: Campaign, actor: str, role: str, req: Decision) -> Approval:
        a = self._pending(c)
        if role not in LIVE_MAKERS:
            raise Refused(403, "wrong_role", f"a {role} cannot approve; an approver or admin does")
        if self.policy.mode_for(c) == "four_eyes" and a.submitted_by == actor:
            raise Refused(403, "four_eyes", f"campaign {c.id!r} was submitted by you: four-eyes "
                          "approval needs another approver")
        log.info("campaign approved", campaign=c.id, actor=actor)
        return self.put(msgspec.structs.replace(a, state="approved", decided_by=actor,
                                                 decided_at=time.time(),
                                                 decision_comment=_comment(req.comment)), c)

    def reject(self, c: Campaign, actor: str, req: Decision) -> Approval:
        a = self._pending(c)
        if not req.comment.strip():
            raise Refused(422, "bad_comment", "comment: say why it is rejected, so the author can fix it")
        log.info("campaign rejected", campaign=c.id, actor=actor)
        return self.put(msgspec.structs.replace(a, state="rejected", decided_by=actor,
                                                 decided_at=time.time(),
                                                 decision_comment=_comment(req.comment)), c)


def _row(r: tuple[object, ...] | list[object]) -> Approval:
    return Approval(str(r[0]), r[1], str(r[2]), str(r[3]), str(r[4]), float(r[5]),  # type: ignore[arg-type]
                    str(r[6]), None if r[7] is None else str(r[7]),
                    None if r[8] is None else float(r[8]), str(r[9]))  # type: ignore[arg-type]
