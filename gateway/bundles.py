"""Bundle and delta sync at the gateway: verify, refuse stale or expired, apply, persist.

Only bytes whose Ed25519 signature verifies against the pinned HQ key are parsed
further. A bundle is applied only when its version is newer than the current one and it
has not expired; the last good bundle is kept in SQLite, so a gateway that restarts
offline works with it until HQ is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import sqlite_utils

from aislecast.kernel.errors import BundleError
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import Bundle, BundleDelta, decode
from aislecast.kernel.signing import Verifier

__all__ = ["BundleStore"]

log = get_logger(__name__)


class BundleStore:
    def __init__(
        self,
        db: sqlite_utils.Database,
        verifier: Verifier,
        store_id: str,
        *,
        on_bundle: Callable[[Bundle], None],
        on_delta: Callable[[BundleDelta], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        # tables ``bundle`` (the last good one) and ``deltas`` (applied since it, replayed
        # on start so a restart does not revive a paused campaign): gateway.storage
        self._conn = db.conn
        self._verifier = verifier
        self.store_id = store_id
        self._on_bundle = on_bundle
        self._on_delta = on_delta
        self._clock = clock
        self.current: Bundle | None = None
        self.delta_seq = 0
        self.rejected: dict[str, int] = {}
        self.redelivered = 0  # the retained bundle again after a (re)subscribe: not an error

    @property
    def version(self) -> int:
        return 0 if self.current is None else self.current.version

    def _reject(self, err: BundleError) -> None:
        self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
        log.warning("bundle rejected reason=%s version=%s: %s", err.reason, err.version, err.message)

    def load_persisted(self) -> bool:
        row = self._conn.execute("SELECT envelope FROM bundle WHERE id = 1").fetchone()
        if row is None:
            return False
        try:
            self._apply(bytes(row[0]), persist=False, allow_expired=True)
        except BundleError as err:
            self._reject(err)
            return False
        for (envelope,) in self._conn.execute("SELECT envelope FROM deltas ORDER BY seq").fetchall():
            try:
                delta = self._open_delta(bytes(envelope))
            except BundleError as err:
                self._reject(err)
                continue
            self.delta_seq = max(self.delta_seq, delta.seq)
            self._on_delta(delta)  # an old pause still holds: expiry is not checked here
        return True

    def offer_bundle(self, envelope: bytes) -> bool:
        """Verify and apply a bundle envelope; False (counted, logged) when refused."""
        try:
            self._apply(envelope, persist=True, allow_expired=False)
        except BundleError as err:
            self._reject(err)
            return False
        return True

    def _apply(self, envelope: bytes, *, persist: bool, allow_expired: bool) -> None:
        raw = self._verifier.open(envelope, "bundle")
        try:
            bundle = decode(raw, Bundle)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise BundleError("malformed", f"bundle body does not match the schema: {exc}") from exc
        if bundle.store.id != self.store_id:
            raise BundleError("malformed", f"bundle is for store {bundle.store.id}", version=bundle.version)
        if bundle.version == self.version and self.current is not None:
            self.redelivered += 1
            return
        if bundle.version < self.version:
            raise BundleError(
                "stale", f"version {bundle.version} <= current {self.version}", version=bundle.version
            )
        if not allow_expired and bundle.expires_at <= self._clock():
            raise BundleError("expired", "bundle expired", version=bundle.version)
        self._on_bundle(bundle)  # may raise BundleError if a campaign cannot be understood
        self.current = bundle
        # deltas up to the one HQ had sent when it built this bundle are in it: a replay
        # of one of them (even after a restart, which forgets the seq) is stale
        self.delta_seq = max(self.delta_seq, bundle.delta_seq)
        if persist:
            self._conn.execute(
                "INSERT INTO bundle(id, version, envelope) VALUES (1, ?, ?) ON CONFLICT(id)"
                " DO UPDATE SET version = excluded.version, envelope = excluded.envelope",
                (bundle.version, envelope),
            )
            # the new bundle was built after these deltas: it carries their changes
            self._conn.execute("DELETE FROM deltas WHERE issued_at <= ?", (bundle.issued_at,))
        log.info("bundle applied version=%d campaigns=%d", bundle.version, len(bundle.campaigns))

    def _open_delta(self, envelope: bytes) -> BundleDelta:
        raw = self._verifier.open(envelope, "delta")
        try:
            delta = decode(raw, BundleDelta)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise BundleError("malformed", f"delta body does not match the schema: {exc}") from exc
        if delta.store != self.store_id:
            raise BundleError("malformed", f"delta is for store {delta.store}")
        return delta

    def offer_delta(self, envelope: bytes) -> bool:
        try:
            delta = self._open_delta(envelope)
            if delta.seq <= self.delta_seq:
                raise BundleError("stale", f"delta seq {delta.seq} <= {self.delta_seq}")
            if delta.expires_at <= self._clock():
                raise BundleError("expired", "delta expired")
        except BundleError as err:
            self._reject(err)
            return False
        self.delta_seq = delta.seq
        self._on_delta(delta)
        self._conn.execute(
            "INSERT INTO deltas(seq, issued_at, envelope) VALUES (?, ?, ?) ON CONFLICT(seq)"
            " DO NOTHING", (delta.seq, delta.issued_at, envelope))
        log.info("delta applied seq=%d opt_outs=%d paused=%d campaigns=%d", delta.seq,
                 len(delta.opt_outs), len(delta.paused), len(delta.campaigns))
        return True
