"""HQ's broker credential registry: the one source of truth for who may log in to MQTT.

One row per broker user in ``broker_users`` (migration 4): its kind (``phone``,
``gateway`` or ``hq``), username (a phone's inbox, ``gw.{store}.{gateway}``,
``hq.{name}``), the password's ``$7$`` hash (never the password), the store and gateway
of a gateway, and when it was created and revoked. A revoked row stays, for the record;
issuing the same username again replaces its hash and clears ``revoked_at``.

:class:`hq.broker_sync.BrokerSync` renders the broker's password and ACL files from
:meth:`CredentialRegistry.snapshot`; every change calls the registry's ``listeners``
(the sync's debounced ``request``), so the broker follows within one debounce.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from aislecast.kernel.acl import GatewayAccount, acl_rules, gateway_username, hq_username
from aislecast.kernel.broker import AclRule
from aislecast.kernel.logs import get_logger
from aislecast.kernel.privatefile import write_private
from hq.broker_auth import CredentialError, check_username, hash_password, new_password, verify_password
from hq.db import HqDb

__all__ = ["HQ_LOGIN_FILE", "BrokerUser", "CredentialRegistry", "Kind", "RegistrySnapshot",
           "ensure_hq_credential", "hq_login_file"]

log = get_logger(__name__)

Kind = Literal["phone", "gateway", "hq"]
# where HQ keeps its own broker password (0600) under its data directory
HQ_LOGIN_FILE: Final = "broker-hq.login"


def hq_login_file(worker: str = "1") -> str:
    """The login file of HQ worker ``worker`` (hq.{worker}): worker 1 keeps the original
    name, so several workers sharing a data directory never overwrite each other's."""
    return HQ_LOGIN_FILE if worker == "1" else f"broker-hq.{worker}.login"
_COLUMNS: Final = "username, kind, password_hash, store, gateway, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class BrokerUser:
    username: str
    kind: Kind
    password_hash: str
    store: str | None
    gateway: str | None
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The active users' hashes and the ACL rules they need: what the broker files hold."""

    users: dict[str, str]
    rules: list[AclRule]


@dataclass(slots=True)
class CredentialRegistry:
    """``CredentialRegistry(db)``: issue, revoke and list broker users in HQ's database."""

    db: HqDb
    listeners: list[Callable[[], None]] = field(default_factory=list)
    # called with the store whose provisioned gateways changed (its bundle lists them)
    gateway_listeners: list[Callable[[str], None]] = field(default_factory=list)

    def _changed(self, store: str | None = None) -> None:
        for notify in self.listeners:
            notify()
        if store is not None:
            for tell in self.gateway_listeners:
                tell(store)

    def issue(self, kind: Kind, username: str, *, store: str | None = None,
              gateway: str | None = None, password: str | None = None) -> str:
        """Register (or re-key) ``username``; returns its password, shown once, stored hashed."""
        check_username(username)
        if (kind == "gateway") != (store is not None and gateway is not None):
            raise CredentialError("store", str(store), f"a {kind} credential "
                                  + ("needs" if kind == "gateway" else "takes no") + " store and gateway")
        password = new_password() if password is None else password
        self.db.execute(
            f"INSERT INTO broker_users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)"  # noqa: S608
            " ON CONFLICT (username) DO UPDATE SET kind = excluded.kind,"
            " password_hash = excluded.password_hash, store = excluded.store,"
            " gateway = excluded.gateway, created_at = excluded.created_at, revoked_at = NULL",
            (username, kind, hash_password(password), store, gateway, time.time()))
        log.info("broker credential issued", kind=kind, username=username)
        self._changed(store if kind == "gateway" else None)
        return password

    def issue_gateway(self, store: str, gateway: str) -> tuple[str, str]:
        """``(username, password)`` of the gateway ``gw.{store}.{gateway}``."""
        username = gateway_username(store, gateway)
        return username, self.issue("gateway", username, store=store, gateway=gateway)

    def revoke(self, username: str) -> bool:
        """Revoke ``username``; False when it has no active credential."""
        n = self.db.execute("UPDATE broker_users SET revoked_at = ? WHERE username = ?"
                            " AND revoked_at IS NULL", (time.time(), username))
        if n:
            log.info("broker credential revoked", username=username)
            user = self.get(username)
            self._changed(user.store if user is not None and user.kind == "gateway" else None)
        return n > 0

    def gateways_of(self, store: str) -> list[str]:
        """The ids of ``store``'s gateways with an active login (what its bundle lists)."""
        rows = self.db.query("SELECT gateway FROM broker_users WHERE kind = 'gateway' AND store = ?"
                             " AND revoked_at IS NULL ORDER BY gateway", (store,))
        return [r[0] for r in rows]

    def gateways_by_store(self) -> dict[str, list[str]]:
        """:meth:`gateways_of` of every store at once (a store with none is absent)."""
        out: dict[str, list[str]] = {}
        for store, gateway in self.db.query(
                "SELECT store, gateway FROM broker_users WHERE kind = 'gateway'"
                " AND revoked_at IS NULL ORDER BY store, gateway"):
            out.setdefault(str(store), []).append(str(gateway))
        return out

    def get(self, username: str) -> BrokerUser | None:
        row = self.db.one(f"SELECT {_COLUMNS} FROM broker_users WHERE username = ?",  # noqa: S608
                          (username,))
        return None if row is None else BrokerUser(*row)

    def users(self, kind: Kind | None = None, *, active: bool = True) -> list[BrokerUser]:
        where, params = ["revoked_at IS NULL"] if active else [], []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {_COLUMNS} FROM broker_users"  # noqa: S608
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        return [BrokerUser(*r) for r in self.db.query(sql + " ORDER BY username", params)]

    def snapshot(self) -> RegistrySnapshot:
        """Every active user's hash, and the ACL of the active gateways and HQ users."""
        active = self.users()
        gateways = [GatewayAccount(u.store, u.gateway) for u in active
                    if u.kind == "gateway" and u.store is not None and u.gateway is not None]
        hq = [u.username for u in active if u.kind == "hq"]
        return RegistrySnapshot({u.username: u.password_hash for u in active},
                                acl_rules(gateways, hq))


def ensure_hq_credential(registry: CredentialRegistry, secret_path: Path,
                         name: str = "1") -> tuple[str, str]:
    """HQ's own ``(username, password)``: the one in ``secret_path`` if the registry still
    accepts it, else a new one registered and written there (0600)."""
    username = hq_username(name)
    user = registry.get(username)
    if user is not None and user.active and secret_path.exists():
        lines = secret_path.read_text(encoding="utf-8").splitlines()
        if lines and verify_password(lines[0], user.password_hash):
            return username, lines[0]
    password = registry.issue("hq", username)
    write_private(secret_path, password + "\n")
    return username, password
