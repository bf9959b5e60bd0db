"""The HQ signing keys a gateway accepts bundles from, across a key rotation.

A gateway starts from the keys its config pins (``hq_public_key``: one PEM or several).
HQ announces its keyring inside every bundle (:class:`aislecast.kernel.schema.KeyNotice`):
once a bundle signed by a pinned key is accepted, the keys it announces as ``next``,
``current`` or ``previous`` are pinned too, and those it announces as ``retired`` are
dropped. Both are kept in the ``pinned_keys`` table (gateway.storage), so a restart
keeps them; a retired key stays refused for good, even if the config still names it
(the operator's retirement at HQ wins over a stale config).

Nothing else can add a key: an announcement counts only inside a bundle whose
signature verified against a key already pinned.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aislecast.kernel.errors import BundleError
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import KeyNotice
from aislecast.kernel.verify import Verifier, key_id, public_key_from_pem

__all__ = ["KeyStats", "PinnedKeys"]

log = get_logger(__name__)


@dataclass(slots=True)
class KeyStats:
    pinned: int = 0  # keys accepted now
    learned: int = 0  # keys pinned from an announcement since start
    retired: int = 0  # keys dropped because HQ announced them retired, since start
    retired_kids: set[str] = field(default_factory=set)


class PinnedKeys:
    """``verifier``'s pinned set, widened and narrowed by HQ's announcements, persisted."""

    def __init__(self, conn: sqlite3.Connection, verifier: Verifier) -> None:
        self._conn = conn
        self.verifier = verifier
        self.stats = KeyStats()
        for kid, pem, retired in conn.execute(
                "SELECT kid, public_key, retired FROM pinned_keys").fetchall():
            if retired:
                self.stats.retired_kids.add(str(kid))
                if verifier.unpin(str(kid)):
                    log.warning("a configured HQ key was retired at HQ: refused", kid=kid)
            elif pem is not None:
                verifier.pin(public_key_from_pem(str(pem)))
        self.stats.pinned = len(verifier.kids)

    @staticmethod
    def check(notices: Sequence[KeyNotice]) -> list[tuple[KeyNotice, bytes | None]]:
        """Each notice with its parsed key; ``malformed`` if a key is not the id it claims."""
        out: list[tuple[KeyNotice, bytes | None]] = []
        for notice in notices:
            if notice.public_key is None:
                if notice.state != "retired":
                    raise BundleError("malformed", f"key {notice.kid} ({notice.state}) has no "
                                                   "public key")
                out.append((notice, None))
                continue
            try:
                pub = public_key_from_pem(notice.public_key)
            except BundleError as exc:
                raise BundleError("malformed", f"announced key {notice.kid} is not an Ed25519 "
                                               "public key") from exc
            if key_id(pub) != notice.kid:
                raise BundleError("malformed", f"announced key {notice.kid} has id {key_id(pub)}")
            out.append((notice, pub))
        return out

    def learn(self, checked: Sequence[tuple[KeyNotice, bytes | None]]) -> None:
        """Apply the announcements of an accepted bundle (from :meth:`check`)."""
        now = time.time()
        for notice, pub in checked:
            if notice.state == "retired":
                self._retire(notice.kid, now)
            elif pub is not None:
                self._pin(notice, pub, now)
        self.stats.pinned = len(self.verifier.kids)

    def _retire(self, kid: str, now: float) -> None:
        if kid in self.stats.retired_kids:
            return
        self._conn.execute(
            "INSERT INTO pinned_keys(kid, public_key, retired, changed_at) VALUES (?, NULL, 1, ?)"
            " ON CONFLICT(kid) DO UPDATE SET public_key = NULL, retired = 1,"
            " changed_at = excluded.changed_at", (kid, now))
        self.stats.retired_kids.add(kid)
        self.stats.retired += 1
        self.verifier.unpin(kid)
        log.info("HQ key retired: bundles signed by it are refused from now on", kid=kid)

    def _pin(self, notice: KeyNotice, pub: bytes, now: float) -> None:
        if notice.kid in self.stats.retired_kids or not self.verifier.pin(pub):
            return  # retirement is for good; a key pinned already stays as it is
        self._conn.execute(
            "INSERT INTO pinned_keys(kid, public_key, retired, changed_at) VALUES (?, ?, 0, ?)"
            " ON CONFLICT(kid) DO NOTHING", (notice.kid, notice.public_key, now))
        self.stats.learned += 1
        log.info("HQ key pinned from a signed announcement", kid=notice.kid, state=notice.state)
