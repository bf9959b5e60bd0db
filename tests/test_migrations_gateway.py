"""Gateway storage migrations: a fresh file, a file made before migrations, a newer file."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from aislecast.kernel.errors import SchemaVersionError
from aislecast.kernel.verify import Verifier, public_key_from_pem
from gateway.bundles import BundleStore
from gateway.caps import CapLedger
from gateway.outbox import Outbox
from gateway.storage import MIGRATION_SET, STEPS, m0001_initial, migrate, open_db, schema_version

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
FACTS = json.loads((FIXTURES / "facts.json").read_text())["gateway"]


def _schema(path: Path) -> set[tuple[str, str, str]]:
    """(type, name, sql) of every table and index but the migrations record."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN"
                            " ('table', 'index') AND name NOT LIKE '%sqlite_migrations%'"
                            " AND name NOT LIKE 'sqlite_%'").fetchall()
    finally:
        conn.close()
    return {(t, n, s or "") for t, n, s in rows}


def _old_copy(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.sqlite"
    shutil.copy(FIXTURES / "gateway-v1.sqlite", path)
    return path


def test_fresh_file_gets_every_table_at_the_newest_version(tmp_path: Path) -> None:
    db = open_db(tmp_path / "gw.sqlite")
    assert schema_version(db) == len(STEPS)
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"outbox", "bundle", "deltas", "cap_charges", "budget_spent", "visits",
            "visit_meta"} <= tables
    applied = db.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall()
    assert applied == [(MIGRATION_SET, s.__name__) for s in STEPS]
    db.close()
    again = open_db(tmp_path / "gw.sqlite")  # reopening applies nothing twice
    assert again.execute("SELECT count(*) FROM _sqlite_migrations").fetchone() == (len(STEPS),)


def test_step_one_is_exactly_the_schema_before_migrations(tmp_path: Path) -> None:
    open_db(tmp_path / "new.sqlite", steps=(m0001_initial,)).close()
    old = _schema(FIXTURES / "gateway-v1.sqlite")
    assert {n for _, n, _ in old} >= {"outbox", "outbox_id", "cap_charges_ts", "visit_meta"}
    assert _schema(tmp_path / "new.sqlite") == old


def test_file_from_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = _old_copy(tmp_path)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = '_sqlite_migrations'"
                       ).fetchone() == (0,)  # the fixture is really unversioned
    raw.close()

    db = open_db(path)
    assert schema_version(db) == len(STEPS)
    outbox = Outbox(db)
    assert len(outbox) == len(FACTS["offers"]) + len(FACTS["events"])
    assert [r.id for r in outbox.pending("event", limit=100)] == FACTS["events"]
    assert [r.id for r in outbox.pending("offer", limit=100)] == FACTS["offers"]
    ledger = CapLedger(db)
    assert sum(ledger.lifetime.values()) == FACTS["cap_charges"]  # every charge: a count
    newest = ledger.ps.today
    assert newest is not None
    assert sorted(r[0] for r in db.execute("SELECT shopper FROM visits").fetchall()) == \
        sorted(ledger.ps.of(i, newest) for i in FACTS["visits"])  # re-keyed, no inbox
    assert db.execute("SELECT version FROM bundle").fetchone() == (FACTS["bundle_version"],)
    assert db.execute("SELECT seq FROM deltas").fetchall() == [(FACTS["delta_seq"],)]


def test_adopted_file_gets_the_later_steps_in_place(tmp_path: Path) -> None:
    def m0005_outbox_note(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE outbox ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    path = _old_copy(tmp_path)
    db = open_db(path, steps=(*STEPS, m0005_outbox_note))
    assert schema_version(db, (*STEPS, m0005_outbox_note)) == len(STEPS) + 1
    notes = db.execute("SELECT note, count(*) FROM outbox GROUP BY note").fetchall()
    assert notes == [("", len(FACTS["offers"]) + len(FACTS["events"]))]


def test_file_from_a_newer_aislecast_is_refused_untouched(tmp_path: Path) -> None:
    def m0005_later(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE later (x INTEGER)")

    path = tmp_path / "gw.sqlite"
    newer = open_db(path, steps=(*STEPS, m0005_later))  # what a newer release writes
    newer.execute("INSERT INTO later VALUES (1)")
    newer.close()
    before = path.read_bytes()

    with pytest.raises(SchemaVersionError) as err:
        open_db(path)
    assert (err.value.path, err.value.found, err.value.known) == (str(path), len(STEPS) + 1, len(STEPS))
    assert "newer aislecast" in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_a_step_out_of_sequence_is_a_programming_error(tmp_path: Path) -> None:
    def m0003_skipped(db: sqlite3.Connection) -> None:
        pass

    db = sqlite3.connect(tmp_path / "gw.sqlite", isolation_level=None)
    with pytest.raises(ValueError, match="m0002_"):
        migrate(db, steps=(m0001_initial, m0003_skipped))


def test_bundle_and_paused_campaign_survive_the_upgrade(tmp_path: Path) -> None:
    db = open_db(_old_copy(tmp_path))
    bundles: list[int] = []
    paused: list[str] = []
    store = BundleStore(db, Verifier(public_key_from_pem((FIXTURES / "hq-v1.pub.pem").read_bytes())),
                        "fixture-store", on_bundle=lambda b: bundles.append(b.version),
                        on_delta=lambda d: paused.extend(d.paused))
    assert store.load_persisted()
    assert (bundles, paused, store.delta_seq) == ([FACTS["bundle_version"]], FACTS["paused"],
                                                  FACTS["delta_seq"])


def _record_schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, sql FROM sqlite_master WHERE name LIKE"
                            " '%sqlite_migrations%' ORDER BY type DESC").fetchall()
    finally:
        conn.close()


def _sqlite_utils_set() -> sqlite_utils.Migrations:
    """The migration set as releases before this one ran it, with sqlite-utils."""
    migrations = sqlite_utils.Migrations(MIGRATION_SET)
    for step in STEPS:
        migrations(name=step.__name__)(lambda db, step=step: step(db.conn))
    return migrations


def test_a_file_migrated_by_sqlite_utils_opens_with_nothing_reapplied(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    raw = sqlite_utils.Database(old)
    _sqlite_utils_set().apply(raw)
    stamp = raw.execute("SELECT applied_at FROM _sqlite_migrations").fetchall()
    raw.conn.close()

    db = open_db(old)
    assert schema_version(db) == len(STEPS)
    assert db.execute("SELECT applied_at FROM _sqlite_migrations").fetchall() == stamp
    db.close()
    open_db(tmp_path / "new.sqlite").close()
    assert _record_schema(tmp_path / "new.sqlite") == _record_schema(old)
    assert len(_record_schema(old)) == 2  # the table and its unique index


def test_sqlite_utils_reads_our_record_as_applied(tmp_path: Path) -> None:
    open_db(tmp_path / "gw.sqlite").close()
    raw = sqlite_utils.Database(tmp_path / "gw.sqlite")
    migrations = _sqlite_utils_set()
    assert [m.name for m in migrations.applied(raw)] == [s.__name__ for s in STEPS]
    assert migrations.pending(raw) == []
    raw.conn.close()
