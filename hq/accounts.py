"""HQ's accounts: users with roles, API tokens and console sessions, on HQ's database.

Roles (docs/architecture.md#accounts-and-roles):

- ``admin``: everything, including stores, users and the audit log;
- ``marketer``: writes campaigns, but only as drafts or paused (no campaign goes live
  without an ``approver``), flashes, mints short links, reads analytics;
- ``approver``: what a marketer does, plus making campaigns live;
- ``store_staff``: scoped to a list of stores; sees those stores' campaigns (coupon codes
  hidden) and gateways, mints short links for them;
- ``analyst``: reads campaigns (coupon codes hidden), analytics and metrics.

Service tokens act as their kind: ``gateway_provisioning`` (fetches HQ's bundle key),
``till`` (scoped to stores), ``wallet`` (enrols shoppers, opts them out),
``broker_sync`` (reads the rendered broker password and ACL files, for
``aislecast broker sync`` next to a broker on another host), ``social_feed`` (posts social
mentions to ``POST /api/feeds/social``, :mod:`hq.feeds`). A
``personal`` token acts as the user who owns it, with that user's role and stores, and
stops working when the user is disabled. A ``shopper`` token (issued at enrolment,
owner = the inbox) acts as ``shopper:INBOX`` on that shopper's own routes (hq.rights).

Secrets: passwords are hashed with argon2id (argon2-cffi's RFC 9106 defaults, a salt
each; memory-hard, because people choose guessable passwords). Tokens and session
cookies are 256 random bits and stored as their SHA-256 only: guessing a secret from a
stolen hash costs ~2^255 hashes however fast each one is, so a slow KDF would add
nothing but ~0.2 s and 64 MiB to every request (an argon2 verify measured here: 200 ms;
a token lookup: 21 µs), and an unsalted hash lets HQ find a
token by its hash with one indexed lookup. Every secret is shown once, when made.

A token that was found live is remembered for :data:`TOKEN_CACHE_S` (1 s; its own expiry
is still checked on every request), so a burst of calls does not query the database,
and wait for its lock, on the event loop for each one. Revoking a token or disabling a
user in this process (any :class:`Accounts` on the same :class:`~hq.db.HqDb`) forgets
every remembered token at once; a revocation by another process (``aislecast hq tokens
revoke``) is honoured within :data:`TOKEN_CACHE_S`. Unknown or refused tokens are never
remembered.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from aislecast.kernel.errors import AislecastError
from hq.db import HqDb
from hq.service import check_id

__all__ = [
    "KINDS",
    "ROLES",
    "SESSION_S",
    "TOKEN_CACHE_S",
    "AccountError",
    "Accounts",
    "Kind",
    "Principal",
    "Role",
    "Session",
    "TokenInfo",
    "User",
    "secret_hash",
]

Role = Literal["admin", "marketer", "approver", "store_staff", "analyst"]
Kind = Literal["gateway_provisioning", "till", "wallet", "broker_sync", "personal", "shopper",
               "social_feed"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

# A console login lasts one working shift; then the browser asks for the password again.
SESSION_S: Final = 8 * 3600.0
_SECRET_BYTES: Final = 32  # 256 bits: tokens and session cookies
_CSRF_BYTES: Final = 24
_TOKEN_PREFIX: Final = "ac_"  # noqa: S105 - a prefix, not a secret; recognisable in a leaked log or a secret scanner
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# NIST SP 800-63B asks at least 8; a console that can pause every campaign asks more
_MIN_PASSWORD: Final = 12

# how long a live token is remembered (see the module docstring), and how many at most
TOKEN_CACHE_S: Final = 1.0
_TOKEN_CACHE_MAX: Final = 4_096

_hasher = PasswordHasher()
# verified against when the user does not exist, so both answers take as long
_DUMMY_HASH: Final = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(AislecastError):
    """Bad input to an account operation: ``field`` names it, ``hint`` the fix."""

    def __init__(self, field: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", hint=hint)
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. ``role`` is a user's role or a service token's kind;
    ``stores`` None means every store."""

    actor: str  # "user:alice" or "token:<id>", written to logs and the audit log
    role: str
    stores: frozenset[str] | None = None
    via: Literal["bearer", "session", "cli"] = "bearer"
    csrf: str | None = None  # the session's double-submit token

    def sees(self, store: str | None) -> bool:
        return self.stores is None or (store is not None and store in self.stores)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    stores: list[str]
    disabled: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    kind: str
    name: str
    owner: str | None
    stores: list[str]
    created_at: float
    expires_at: float | None
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class Session:
    cookie: str  # the secret for the browser; HQ keeps only its hash
    csrf: str
    expires_at: float


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_stores(role: str, stores: list[str]) -> list[str]:
    for s in stores:
        if problems := check_id("store", s):
            raise AccountError("--store", problems[0].removeprefix("store: "))
    if role in {"store_staff", "till"} and not stores:
        raise AccountError("--store", f"a {role} needs at least one store",
                           hint="add --store STORE (repeat it for several)")
    if role not in {"store_staff", "till", "personal"} and stores:
        raise AccountError("--store", f"a {role} is not scoped to stores",
                           hint="drop --store, or use --role store_staff")
    return sorted(set(stores))


# secret hash -> (principal, the token's expiry, remembered until): one per database
_Remembered = dict[str, tuple[Principal, float | None, float]]
_token_caches: weakref.WeakKeyDictionary[HqDb, _Remembered] = weakref.WeakKeyDictionary()


class Accounts:
    """Users, tokens and sessions on ``db`` (tables from migration m0002_accounts);
    ``monotonic`` times the token cache."""

    def __init__(self, db: HqDb, *, session_s: float = SESSION_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.session_s = session_s
        self.monotonic = monotonic
        self._remembered = _token_caches.setdefault(db, {})

    # ---- users --------------------------------------------------------------------
    def add_user(self, name: str, role: str, *, password: str | None = None,
                 stores: list[str] | None = None) -> str:
        """Create ``name``; returns its password (``password`` or a generated one)."""
        if not _NAME_RE.fullmatch(name):
            raise AccountError("name", f"{name!r} must be 1-64 lowercase letters, digits, "
                               "'.', '_' or '-', starting with a letter or digit")
        if role not in ROLES:
            raise AccountError("--role", f"unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
        scoped = _check_stores(role, stores or [])
        password = password if password is not None else secrets.token_urlsafe(15)
        if len(password) < _MIN_PASSWORD:
            raise AccountError("password", f"needs at least {_MIN_PASSWORD} characters",
                               hint="or leave it out and HQ generates one")
        if self.db.one("SELECT 1 FROM users WHERE name = ?", (name,)) is not None:
            raise AccountError("name", f"user {name!r} already exists",
                               hint="pick another name, or disable the old user first")
        self.db.execute("INSERT INTO users (name, role, stores, password_hash, disabled, created_at)"
                        " VALUES (?, ?, ?, ?, 0, ?)",
                        (name, role, json.dumps(scoped), _hasher.hash(password), time.time()))
        return password

    def users(self) -> list[User]:
        rows = self.db.query("SELECT name, role, stores, disabled, created_at FROM users ORDER BY name")
        return [User(r[0], r[1], json.loads(r[2]), bool(r[3]), float(r[4])) for r in rows]

    def user(self, name: str) -> User | None:
        return next((u for u in self.users() if u.name == name), None)

    def disable_user(self, name: str) -> None:
        """Refuse ``name``'s logins and personal tokens from now on; ends its sessions."""
        if self.db.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,)) == 0:
            raise AccountError("name", f"no user {name!r}", hint="see `aislecast hq users list`")
        self._remembered.clear()  # its personal tokens
        self.db.execute("DELETE FROM sessions WHERE username = ?", (name,))

    def check_password(self, name: str, password: str) -> Principal | None:
        """The user's principal if ``password`` is right and the user is enabled (slow:
        ~0.2 s of argon2 here, so call it off the event loop)."""
        row = self.db.one("SELECT password_hash, disabled FROM users WHERE name = ?", (name,))
        try:
            _hasher.verify(row[0] if row and row[0] else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row[1]:
            return None
        return self._user_principal(name, "session")

    def _user_principal(self, name: str, via: Literal["bearer", "session"],
                        csrf: str | None = None) -> Principal | None:
        row = self.db.one("SELECT role, stores, disabled FROM users WHERE name = ?", (name,))
        if row is None or row[2]:
            return None
        stores = frozenset(json.loads(row[1])) if row[0] == "store_staff" else None
        return Principal(f"user:{name}", row[0], stores, via, csrf)

    # ---- tokens -------------------------------------------------------------------
    def issue_token(self, kind: str, *, name: str = "", owner: str | None = None,
                    stores: list[str] | None = None, ttl_s: float | None = None) -> tuple[str, str]:
        """A new token: returns ``(id, secret)``; the secret is never stored."""
        if kind not in KINDS:
            raise AccountError("--kind", f"unknown kind {kind!r}", hint=f"one of {', '.join(KINDS)}")
        if kind == "personal":
            if owner is None or self.user(owner) is None:
                raise AccountError("--user", f"a personal token needs an existing user, not {owner!r}",
                                   hint="add --user NAME (see `aislecast hq users list`)")
        elif kind == "shopper":  # hq.consent: the shopper's own token, owner = their inbox
            if owner is None or self.db.one("SELECT 1 FROM shoppers WHERE inbox = ?", (owner,)) is None:
                raise AccountError("--user", "a shopper token needs an enrolled shopper's inbox,"
                                   f" not {owner!r}")
        elif owner is not None:
            raise AccountError("--user", f"only personal and shopper tokens have an owner, not {kind}")
        scoped = _check_stores(kind, stores or []) if kind != "personal" or stores else []
        if ttl_s is not None and ttl_s <= 0:
            raise AccountError("--expires-days", "must be above 0")
        tid = secrets.token_hex(6)
        secret = f"{_TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        now = time.time()
        self.db.execute(
            "INSERT INTO api_tokens (id, secret_hash, kind, name, owner, stores, created_at,"
            " expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (tid, secret_hash(secret), kind, name or kind, owner, json.dumps(scoped), now,
             None if ttl_s is None else now + ttl_s))
        return tid, secret

    def tokens(self) -> list[TokenInfo]:
        rows = self.db.query("SELECT id, kind, name, owner, stores, created_at, expires_at,"
                             " revoked_at FROM api_tokens ORDER BY created_at, id")
        return [TokenInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), float(r[5]), r[6], r[7])
                for r in rows]

    def revoke_token(self, tid: str) -> None:
        self._remembered.clear()
        if self.db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                           (time.time(), tid)) == 0:
            raise AccountError("ID", f"no live token {tid!r}", hint="see `aislecast hq tokens list`")

    def token_principal(self, secret: str, now: float | None = None) -> Principal | None:
        """The principal of a live token, or None (unknown, expired, revoked, owner disabled)."""
        if not secret.startswith(_TOKEN_PREFIX):
            return None
        digest, now = secret_hash(secret), time.time() if now is None else now
        hit = self._remembered.get(digest)
        if hit is not None and hit[2] > self.monotonic():
            known, expires_at, _ = hit
            return known if expires_at is None or expires_at > now else None
        row = self.db.one("SELECT id, kind, owner, stores, expires_at, revoked_at FROM api_tokens"
                          " WHERE secret_hash = ?", (digest,))
        if row is None or row[5] is not None or (row[4] is not None and row[4] <= now):
            return None
        p = self._token_row_principal(row[0], row[1], row[2], json.loads(row[3]))
        if p is not None:
            if len(self._remembered) >= _TOKEN_CACHE_MAX:
                self._remembered.clear()
            self._remembered[digest] = (p, row[4], self.monotonic() + TOKEN_CACHE_S)
        return p

    def _token_row_principal(self, tid: str, kind: str, owner: str | None,
                             stores: list[str]) -> Principal | None:
        if kind == "personal":
            user = None if owner is None else self._user_principal(owner, "bearer")
            if user is None:
                return None
            narrowed = frozenset(stores) & user.stores if stores and user.stores else (
                frozenset(stores) if stores else user.stores)
            return Principal(f"token:{tid}", user.role, narrowed, "bearer")
        if kind == "shopper":  # acts only on its own inbox (hq.consent), sees no store
            return Principal(f"shopper:{owner}", kind, frozenset(), "bearer")
        return Principal(f"token:{tid}", kind, frozenset(stores) if stores else None, "bearer")

    # ---- console sessions ---------------------------------------------------------
    def open_session(self, name: str) -> Session:
        cookie, csrf = secrets.token_urlsafe(_SECRET_BYTES), secrets.token_urlsafe(_CSRF_BYTES)
        now = time.time()
        self.db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        self.db.execute("INSERT INTO sessions (secret_hash, username, csrf, created_at, expires_at)"
                        " VALUES (?, ?, ?, ?, ?)", (secret_hash(cookie), name, csrf, now,
                                                    now + self.session_s))
        return Session(cookie, csrf, now + self.session_s)

    def session_principal(self, cookie: str, now: float | None = None) -> Principal | None:
        row = self.db.one("SELECT username, csrf, expires_at FROM sessions WHERE secret_hash = ?",
                          (secret_hash(cookie),))
        if row is None or float(row[2]) <= (time.time() if now is None else now):
            return None
        return self._user_principal(row[0], "session", row[1])

    def close_session(self, cookie: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE secret_hash = ?", (secret_hash(cookie),))
