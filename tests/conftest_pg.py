"""PostgreSQL for tests (docs/architecture.md#postgresql): the machine's server, one fresh schema per test.

``AISLECAST_TEST_PG`` overrides the server URL (default: trust auth on 127.0.0.1:5432,
database ``test``). Each test gets its own schema, selected through libpq's
``options=-csearch_path=...`` in the URL, so HQ's code is unchanged and parallel runs
never collide; the schema is dropped afterwards. When the server is absent the test
is skipped with the reason, never passed silently.

Test modules wrap :func:`hq_url` in a fixture parametrized over ``sqlite`` and
``postgresql`` (a plain module, not a conftest, so no fixture is global).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

__all__ = ["BACKENDS", "PG_URL", "hq_url", "pg_schema"]

PG_URL = os.environ.get("AISLECAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def pg_schema(base: str = PG_URL) -> Iterator[str]:
    """Create a uniquely named schema; yield a URL whose search_path is that schema."""
    try:
        import psycopg  # noqa: PLC0415
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]'): PostgreSQL tests skipped")
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {base} ({str(exc).strip()[:120]}); "
                    "start it or set AISLECAST_TEST_PG")
    schema = f"aislecast_t_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in base else "?"
        try:
            yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def hq_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty HQ database URL for ``backend`` ("sqlite" or "postgresql")."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/hq.sqlite"
        return
    with pg_schema() as url:
        yield url
