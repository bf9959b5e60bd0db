"""HQ's schema, as numbered migrations recorded in a ``schema_migrations`` table.

The same steps run on SQLite and PostgreSQL through :class:`~hq.db.HqDb` (standard SQL
that both accept; a step that ever needs a dialect of its own branches on
``db.dialect``). :class:`~hq.db.HqDb` runs :func:`migrate` when it opens:

* all pending steps and their records are committed in one transaction, or none is;
  on PostgreSQL under a transaction-scoped advisory lock, so several HQ workers
  starting at once on one database migrate it once (concurrent ``CREATE TABLE IF NOT
  EXISTS`` can still collide in the catalog); on SQLite under ``BEGIN IMMEDIATE``;
* step 1 is exactly the schema of the releases before migrations existed, with ``IF
  NOT EXISTS``: their database has the tables but no ``schema_migrations``, and is
  adopted as version 1 (the step adds any table that HQ had not created yet, such as
  ``profiles``, made on first use back then), then upgraded in place;
* a database whose recorded version is above the newest step here was written by a
  newer aislecast and is refused with :class:`SchemaVersionError`, unchanged.

Adding a step: append ``m000N_what`` to :data:`STEPS` (the next number; a released step
is never edited or renumbered). See docs/storage.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

from aislecast.kernel.errors import SchemaVersionError
from hq.inbox_index import m0018_inbox_index
from hq.reach import m0017_reach
from hq.rollup_schema import cover_hours
from hq.rollups import m0009_rollups
from hq.scope import m0012_shopper_stores

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["STEPS", "VERSIONS_TABLE", "Step", "migrate", "schema_version"]

log = logging.getLogger("aislecast.hq.migrations")

VERSIONS_TABLE: Final = "schema_migrations"
Step = Callable[["HqDb"], None]

# Any constant key of our own for pg_advisory_xact_lock.
_LOCK_KEY: Final = 0x61_69_73_6C  # "aisl"

def _run(db: HqDb, stmts: Iterable[str]) -> None:
    """A step's statements, in order (inside :func:`migrate`'s one transaction)."""
    for stmt in stmts:
        db.execute(stmt)


_V1: Final = (
    "CREATE TABLE IF NOT EXISTS stores (id TEXT PRIMARY KEY, name TEXT NOT NULL, tz TEXT NOT NULL,"
    " bundle_version INTEGER NOT NULL DEFAULT 0, delta_seq INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS zones (store TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (store, id))",
    "CREATE TABLE IF NOT EXISTS beacons (store TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (store, id))",
    "CREATE TABLE IF NOT EXISTS campaigns (id TEXT PRIMARY KEY, body TEXT NOT NULL,"
    " status TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shoppers (inbox TEXT PRIMARY KEY, identity_key TEXT NOT NULL,"
    " consents TEXT NOT NULL, opted_out INTEGER NOT NULL DEFAULT 0,"
    " created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
    " ts DOUBLE PRECISION NOT NULL, store TEXT, gateway TEXT, campaign TEXT, variant TEXT,"
    " offer TEXT, inbox TEXT, zone TEXT, reason TEXT, holdout INTEGER, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_campaign ON events (campaign, kind)",
    "CREATE TABLE IF NOT EXISTS shortlinks (code TEXT PRIMARY KEY, url TEXT NOT NULL,"
    " store TEXT, tag TEXT, campaign TEXT)",
    # segments and loyalty tier per shopper, for hq.learning
    "CREATE TABLE IF NOT EXISTS profiles (inbox TEXT PRIMARY KEY,"
    " segments TEXT NOT NULL, tier TEXT NOT NULL)",
)
_V1_TABLES: Final = frozenset({"stores", "zones", "beacons", "campaigns", "shoppers", "events",
                               "shortlinks", "profiles"})


def m0001_initial(db: HqDb) -> None:
    """The pre-migration schema (``IF NOT EXISTS``, so an existing database is adopted)."""
    _run(db, _V1)


def m0002_events_offer_index(db: HqDb) -> None:
    """Feedback is checked against the offer's ``offer_published`` event (hq.ownership):
    by offer, since the (campaign, kind) index costs ~24 ms a lookup at 100k offers."""
    db.execute("CREATE INDEX IF NOT EXISTS events_offer ON events (offer)")


_V3: Final = (
    # HQ's people; stores: JSON list, for store_staff only; password_hash: argon2id
    "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, stores TEXT NOT NULL,"
    " password_hash TEXT, disabled INTEGER NOT NULL DEFAULT 0,"
    " created_at DOUBLE PRECISION NOT NULL)",
    # service and personal API tokens, by the SHA-256 of the secret (hq.accounts)
    "CREATE TABLE api_tokens (id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE,"
    " kind TEXT NOT NULL, name TEXT NOT NULL, owner TEXT, stores TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION,"
    " revoked_at DOUBLE PRECISION)",
    # console logins, by the SHA-256 of the cookie's value
    "CREATE TABLE sessions (secret_hash TEXT PRIMARY KEY, username TEXT NOT NULL,"
    " csrf TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
    " expires_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX sessions_user ON sessions (username)",
    # who changed what and when (hq.audit)
    "CREATE TABLE audit (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,"
    " action TEXT NOT NULL, object TEXT NOT NULL, before TEXT, after TEXT)",
    "CREATE INDEX audit_ts ON audit (ts)",
    "CREATE INDEX audit_object ON audit (object, ts)",
)


def m0003_accounts(db: HqDb) -> None:
    """Users, API tokens, console sessions and the audit log (docs/architecture.md#accounts-and-roles)."""
    _run(db, _V3)


def m0004_broker_users(db: HqDb) -> None:
    """The broker credential registry (hq.credentials): who may log in to MQTT, by hash."""
    _run(db, ("CREATE TABLE broker_users (username TEXT PRIMARY KEY, kind TEXT NOT NULL,"
              " password_hash TEXT NOT NULL, store TEXT, gateway TEXT,"
              " created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)",
              "CREATE INDEX broker_users_kind ON broker_users (kind, revoked_at)"))


_V5: Final = (
    # the shopper's home stores, chosen at enrolment (JSON list; hq.scope's shopper_stores
    # holds which stores receive the shopper)
    "ALTER TABLE shoppers ADD COLUMN home_stores TEXT NOT NULL DEFAULT '[]'",
    # every consent change (hq.consent); the current state is the latest per purpose
    "CREATE TABLE consent_history (id TEXT PRIMARY KEY, inbox TEXT NOT NULL,"
    " purpose TEXT NOT NULL, granted INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL,"
    " source TEXT NOT NULL)",
    "CREATE INDEX consent_history_inbox ON consent_history (inbox, at)",
    # one anonymous row per erasure: when, and how much was deleted or anonymised
    "CREATE TABLE erasures (id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL,"
    " consent_changes INTEGER NOT NULL, events INTEGER NOT NULL)",
    # retention (hq.retention) deletes by age; export and erase find a shopper's events
    "CREATE INDEX events_ts ON events (ts)",
    "CREATE INDEX events_inbox ON events (inbox)",
)


def m0005_consent(db: HqDb) -> None:
    """Consent history, home stores, erasure tombstones (docs/architecture.md#consent-and-data-rights)."""
    _run(db, _V5)


_V6: Final = (
    # till purchase lines (hq.till): inbox NULL is an anonymous sale; value in cents
    "CREATE TABLE purchases (id TEXT PRIMARY KEY, store TEXT NOT NULL, inbox TEXT,"
    " member TEXT, ts DOUBLE PRECISION NOT NULL, till TEXT NOT NULL, txn TEXT NOT NULL,"
    " product TEXT, category TEXT, quantity INTEGER NOT NULL, value_cents INTEGER NOT NULL,"
    " line INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX purchases_inbox ON purchases (inbox, ts)",
    "CREATE INDEX purchases_store ON purchases (store, ts)",
    # redeemed till codes, each once; (till, txn) makes a replayed redemption idempotent
    # offer and inbox NULL until the gateway's batch naming the offer (id = serial...) comes
    "CREATE TABLE redemptions (code TEXT PRIMARY KEY, store TEXT NOT NULL,"
    " campaign TEXT NOT NULL, variant TEXT NOT NULL, serial TEXT NOT NULL, offer TEXT,"
    " inbox TEXT, expires_at DOUBLE PRECISION NOT NULL, till TEXT NOT NULL,"
    " txn TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX redemptions_store ON redemptions (store, ts)",
    "CREATE INDEX redemptions_unbound ON redemptions (serial) WHERE offer IS NULL",
    # the wallet's member QR id, HQ-issued and opaque, per shopper
    "CREATE TABLE members (member TEXT PRIMARY KEY, inbox TEXT NOT NULL UNIQUE,"
    " created_at DOUBLE PRECISION NOT NULL)",
    # a retailer's loyalty card number the shopper linked to their pseudonym (wallet)
    "CREATE TABLE loyalty_ids (loyalty TEXT PRIMARY KEY, inbox TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL)",
)


def m0006_till(db: HqDb) -> None:
    """Till redemptions of single-use codes, purchase lines and member ids (hq.till)."""
    _run(db, _V6)


_V7: Final = (
    # one row per campaign that went through approval (hq.approvals): its latest round
    "CREATE TABLE approvals (campaign TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " target TEXT NOT NULL, digest TEXT NOT NULL, submitted_by TEXT NOT NULL,"
    " submitted_at DOUBLE PRECISION NOT NULL, comment TEXT NOT NULL, decided_by TEXT,"
    " decided_at DOUBLE PRECISION, decision_comment TEXT NOT NULL)",
    "CREATE INDEX approvals_state ON approvals (state, submitted_at)",
    # feed items and social posts already seen (hq.feeds), by a hash of source and id
    "CREATE TABLE feed_items (key TEXT PRIMARY KEY, source TEXT NOT NULL,"
    " seen_at DOUBLE PRECISION NOT NULL, campaign TEXT)",
    # each feed's validators for conditional GETs (ETag, Last-Modified)
    "CREATE TABLE feed_state (url TEXT PRIMARY KEY, etag TEXT, modified TEXT)",
)


def m0007_approvals_feeds(db: HqDb) -> None:
    """Campaign approvals and flash proposals from feeds (docs/architecture.md#approval)."""
    _run(db, _V7)


def m0008_tags(db: HqDb) -> None:
    """Shelf tags registered when staff write them (hq.registry): where, which campaign
    and short link, when and by whom."""
    db.execute("CREATE TABLE tags (store TEXT NOT NULL, id TEXT NOT NULL,"
               " written_at DOUBLE PRECISION NOT NULL, written_by TEXT NOT NULL, zone TEXT,"
               " product TEXT, campaign TEXT, code TEXT, url TEXT, PRIMARY KEY (store, id))")


def m0010_leads(db: HqDb) -> None:
    """Lead forms shoppers submitted (hq.leads): personal data, kept out of ``events``,
    exported and erased with the shopper (hq.rights)."""
    _run(db, ("CREATE TABLE leads (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,"
              " campaign TEXT NOT NULL, store TEXT NOT NULL, offer TEXT NOT NULL,"
              " inbox TEXT NOT NULL, fields TEXT NOT NULL)",
              "CREATE INDEX leads_campaign ON leads (campaign, ts)",
              "CREATE INDEX leads_inbox ON leads (inbox)"))


def m0011_code_refusals(db: HqDb) -> None:
    """Refused till codes HQ can attribute to a campaign (hq.till): what the
    ``code_refusals`` auto-pause rule counts (hq.autopause)."""
    _run(db, ("CREATE TABLE code_refusals (ts DOUBLE PRECISION NOT NULL, store TEXT NOT NULL,"
              " campaign TEXT NOT NULL, reason TEXT NOT NULL, till TEXT NOT NULL,"
              " code TEXT NOT NULL)",
              "CREATE INDEX code_refusals_campaign ON code_refusals (campaign, ts)"))


def m0013_feed_rules(db: HqDb) -> None:
    """Feed rules written over HTTP (hq.feed_rule_store): they override hq.toml's rules
    of the same name."""
    db.execute("CREATE TABLE feed_rules (name TEXT PRIMARY KEY, body TEXT NOT NULL,"
               " updated_by TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)")


def m0014_retention_ts(db: HqDb) -> None:
    """Retention (hq.retention) deletes these by age, as it does events: an index on
    their time each, so a round finds its rows without reading the whole table."""
    _run(db, (f"CREATE INDEX {table}_ts ON {table} (ts)"
              for table in ("code_refusals", "purchases", "redemptions", "leads")))


def m0015_store_coordinates(db: HqDb) -> None:
    """A store's optional position (WGS 84 degrees; NULL: not given), for the
    ``locations`` of wallet passes (hq.passes)."""
    _run(db, (f"ALTER TABLE stores ADD COLUMN {c} DOUBLE PRECISION" for c in ("latitude", "longitude")))


def m0016_rollup_hours_cover(db: HqDb) -> None:
    """PostgreSQL: a campaign's hourly series read from a covering index
    (:func:`hq.rollup_schema.cover_hours`); nothing on SQLite."""
    cover_hours(db)


STEPS: Final[tuple[Step, ...]] = (m0001_initial, m0002_events_offer_index, m0003_accounts,
                                  m0004_broker_users, m0005_consent, m0006_till,
                                  m0007_approvals_feeds, m0008_tags, m0009_rollups,
                                  m0010_leads, m0011_code_refusals, m0012_shopper_stores,
                                  m0013_feed_rules, m0014_retention_ts,
                                  m0015_store_coordinates, m0016_rollup_hours_cover,
                                  m0017_reach, m0018_inbox_index)


def schema_version(db: HqDb) -> int:
    """The newest version recorded in ``db``; 0 when none is (or no table to record it)."""
    if VERSIONS_TABLE not in db.tables():
        return 0
    row = db.one(f"SELECT max(version) FROM {VERSIONS_TABLE}")  # noqa: S608 - a constant
    return int(row[0]) if row and row[0] is not None else 0


def migrate(db: HqDb, steps: Sequence[Step] = STEPS) -> int:
    """Bring ``db`` to the newest version of ``steps`` in one transaction; returns it.

    Raises :class:`SchemaVersionError` (nothing written) for a newer aislecast's database.
    """
    with db.transaction(immediate=True):
        if db.dialect == "postgresql":
            db.query("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
        found = schema_version(db)
        if found > len(steps):
            raise SchemaVersionError(db.safe_url, found, len(steps))
        if found == 0 and db.tables() & _V1_TABLES:
            log.info("adopting an HQ database made before migrations as version 1 db=%s",
                     db.safe_url)
        db.execute(f"CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (version INTEGER PRIMARY KEY,"
                   " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
        for version, step in enumerate(steps[found:], start=found + 1):
            step(db)
            db.execute(f"INSERT INTO {VERSIONS_TABLE} (version, name, applied_at)"  # noqa: S608
                       " VALUES (?, ?, ?)", (version, step.__name__, time.time()))
        if found < len(steps):
            log.info("HQ database migrated db=%s from=%d to=%d", db.safe_url, found, len(steps))
    return len(steps)
