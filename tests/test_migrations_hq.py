"""HQ storage migrations on SQLite and PostgreSQL: fresh, adopted from before migrations,
upgraded by a later step, and refused when a newer aislecast wrote the database."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from aislecast.kernel.errors import SchemaVersionError
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.consent import record_consent
from hq.db import HqDb, redact
from hq.ingest import Ingest
from hq.learning import profiles
from hq.migrations import STEPS, VERSIONS_TABLE, migrate, schema_version
from hq.service import HqService
from hq.shortlink_store import DbShortLinkStore
from tests.conftest_pg import BACKENDS, hq_url, pg_schema
from tests.harness import bearer, token_for

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
FACTS = json.loads((FIXTURES / "facts.json").read_text())["hq"]
V1_TABLES = {"stores", "zones", "beacons", "campaigns", "shoppers", "events", "shortlinks",
             "profiles"}


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with hq_url(request.param, tmp_path) as u:
        yield u


def _fixture_rows() -> tuple[list[str], dict[str, list[tuple[object, ...]]]]:
    """The fixture's DDL (as the old code wrote it) and its rows, table by table."""
    conn = sqlite3.connect(FIXTURES / "hq-v1.sqlite")
    try:
        ddl = [r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, name")]
        rows = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in V1_TABLES}  # noqa: S608
    finally:
        conn.close()
    return ddl, rows


def _old_database(url: str, tmp_path: Path) -> str:
    """The v1 fixture at ``url``: copied for SQLite; on PostgreSQL rebuilt from the
    fixture's own DDL (old HQ ran the same statements there) and rows."""
    if not url.startswith("postgresql"):
        shutil.copy(FIXTURES / "hq-v1.sqlite", tmp_path / "hq.sqlite")
        return url
    ddl, rows = _fixture_rows()
    raw = HqDb(url, create_schema=False)
    for stmt in ddl:
        raw.execute(stmt)
    for table, data in rows.items():
        if data:
            marks = ", ".join("?" * len(data[0]))
            raw.executemany(f"INSERT INTO {table} VALUES ({marks})", data)  # noqa: S608
    raw.close()
    return url


def _service(db: HqDb, tmp_path: Path) -> HqService:
    return HqService(db, Signer(load_or_create_signing_key(tmp_path / "hq.pem")))


def test_fresh_database_is_at_the_newest_version(url: str) -> None:
    db = HqDb(url)
    assert schema_version(db) == len(STEPS)
    assert V1_TABLES | {VERSIONS_TABLE} <= db.tables()
    db.close()
    again = HqDb(url)  # reopening applies nothing twice
    assert again.query(f"SELECT version, name FROM {VERSIONS_TABLE}") == [  # noqa: S608
        (i, s.__name__) for i, s in enumerate(STEPS, start=1)]
    again.close()


def test_step_one_is_exactly_the_schema_before_migrations(tmp_path: Path) -> None:
    new = HqDb(f"sqlite:///{tmp_path}/new.sqlite", create_schema=False)
    assert migrate(new, STEPS[:1]) == 1  # step 1 alone; later steps add their own tables
    new.close()

    def schema(path: Path) -> set[tuple[str, str]]:
        conn = sqlite3.connect(path)
        try:
            return set(conn.execute("SELECT name, sql FROM sqlite_master WHERE name != ?"
                                    " AND name NOT LIKE 'sqlite_autoindex%'", (VERSIONS_TABLE,)))
        finally:
            conn.close()

    old = schema(FIXTURES / "hq-v1.sqlite")
    assert {n for n, _ in old} >= V1_TABLES
    later = {"events_offer"}  # added by step 2 (m0002_events_offer_index)
    assert {(n, sql) for n, sql in schema(tmp_path / "new.sqlite") if n not in later} == old


async def test_database_from_before_migrations_is_adopted_and_served(url: str,
                                                                     tmp_path: Path) -> None:
    db = HqDb(_old_database(url, tmp_path))
    assert schema_version(db) == len(STEPS)
    svc = _service(db, tmp_path)
    assert [c.id for c in svc.campaigns()] == FACTS["campaigns"]
    assert svc.opted_out() == [FACTS["opted_out"]]
    # the shoppers seen in the store (their events, backfilled by m0012_shopper_stores),
    # as of the fixture's last event: 30 days later the store no longer receives them
    seen = float(db.one("SELECT max(ts) FROM events")[0])  # type: ignore[index]
    bundle = svc.build_bundle(FACTS["store"], now=seen)
    assert sorted(c.id for c in bundle.campaigns) == FACTS["campaigns"]
    # the opted-out shopper was never seen in the store: its bundle does not name them
    assert bundle.opt_outs == []
    assert sorted({i for t in bundle.token_tables for i in t.tokens.values()}) == FACTS["shoppers"]
    # its store has no position (m0015_store_coordinates adds them, NULL); one can be set
    store = svc.get_store(FACTS["store"])
    assert (store.latitude, store.longitude) == (None, None) and bundle.store == store
    svc.upsert_store(msgspec.structs.replace(store, latitude=48.1, longitude=11.6))
    assert (svc.get_store(FACTS["store"]).latitude, svc.get_store(FACTS["store"]).longitude) == (
        48.1, 11.6)
    # v1 had no personalisation purpose: an old grant of offers (and analytics) does not
    # become one, so its shoppers have no profile until they grant it (hq.purposes)
    inbox = FACTS["profile"]["inbox"]
    assert inbox in FACTS["shoppers"] and inbox not in profiles(svc)
    record_consent(db, inbox, "personalisation", True, source="api")
    prof = profiles(svc)[inbox]
    assert (prof.segments, prof.tier) == (FACTS["profile"]["segments"], FACTS["profile"]["tier"])
    link = await DbShortLinkStore(db, lambda evs: None).resolve(FACTS["shortlink"]["code"])
    assert link is not None and link.url == FACTS["shortlink"]["url"]
    app = create_app(svc, Ingest(db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 headers=bearer(token_for(app.state.service.db, "admin")),
                                 base_url="http://hq") as client:
        r = await client.get("/api/campaigns/c-produce")
        assert r.status_code == 200 and r.json()["id"] == "c-produce"
        stats = await client.get("/api/analytics/campaigns/c-produce")
        assert stats.status_code == 200
        body = stats.json()
        assert (body["impressions"], body["opens"]) == (len(FACTS["shoppers"]), 1)
        # m0017_reach backfilled the different shoppers from the old events
        assert body["shoppers"]["opens"] == 1
    db.close()


def test_adopted_database_gets_the_later_steps(url: str, tmp_path: Path) -> None:
    def m0002_store_note(db: HqDb) -> None:
        db.execute("ALTER TABLE stores ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    db = HqDb(_old_database(url, tmp_path), create_schema=False)
    assert schema_version(db) == 0  # unversioned, as the old code left it
    assert migrate(db, (*STEPS, m0002_store_note)) == len(STEPS) + 1
    assert db.query("SELECT id, note FROM stores") == [(FACTS["store"], "")]
    assert schema_version(db) == len(STEPS) + 1
    db.close()


def test_database_from_a_newer_aislecast_is_refused_untouched(url: str) -> None:
    newer = HqDb(url)
    newer.execute(f"INSERT INTO {VERSIONS_TABLE} (version, name, applied_at)"  # noqa: S608
                  " VALUES (?, ?, ?)", (len(STEPS) + 1, "m0002_from_the_future", 0.0))
    newer.execute("INSERT INTO stores (id, name, tz) VALUES ('s1', 'S', 'UTC')")
    newer.close()

    with pytest.raises(SchemaVersionError) as err:
        HqDb(url)
    assert (err.value.found, err.value.known) == (len(STEPS) + 1, len(STEPS))
    assert err.value.path == redact(url)
    assert "newer aislecast" in str(err.value) and "\n" not in str(err.value)
    check = HqDb(url, create_schema=False)
    assert schema_version(check) == len(STEPS) + 1
    assert check.query("SELECT id FROM stores") == [("s1",)]
    check.close()


def test_workers_starting_together_on_postgresql_migrate_once() -> None:
    with pg_schema() as url:
        opened: list[HqDb] = []
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                opened.append(HqDb(url))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(opened) == 4
        assert opened[0].query(f"SELECT count(*) FROM {VERSIONS_TABLE}") == [(len(STEPS),)]  # noqa: S608
        for db in opened:
            db.close()


def test_a_password_never_reaches_the_message() -> None:
    assert redact("postgresql://hq:s3cret@db.example:5432/hq") == \
        "postgresql://hq:***@db.example:5432/hq"
    assert redact("sqlite:///var/lib/hq.sqlite") == "sqlite:///var/lib/hq.sqlite"


def test_hq_serve_on_a_newer_database_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hq.sqlite"
    newer = HqDb(url)
    newer.execute(f"INSERT INTO {VERSIONS_TABLE} (version, name, applied_at)"  # noqa: S608
                  " VALUES (?, ?, ?)", (len(STEPS) + 1, "m0002_from_the_future", 0.0))
    newer.close()
    proc = subprocess.run(
        [sys.executable, "-m", "aislecast", "hq", "serve", "--db", url, "--key",
         str(tmp_path / "k.pem"), "--broker", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"has schema version {len(STEPS) + 1}" in proc.stderr


def test_each_step_is_named_by_its_version() -> None:
    # the version recorded is the step's place in STEPS: a step written in parallel work
    # and merged out of order would record its number under another step's name
    assert [s.__name__[:5] for s in STEPS] == [f"m{i:04d}" for i in range(1, len(STEPS) + 1)]
