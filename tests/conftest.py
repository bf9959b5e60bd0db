"""Shared fixtures: a private Mosquitto per test on a free port (docs/architecture.md#mosquitto), and a guard
that fails any test whose code blocks the event loop (blockbuster; see tests/blocking.py).
Tests marked ``slow`` are collected first, so each xdist worker starts on one of them and
the run does not end waiting for a long test begun last (docs/architecture.md#how-the-suite-runs)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from hq.db import HqDb
from tests.blocking import SCANNED, allow_known_blocking
from tests.conftest_pg import BACKENDS, hq_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``slow`` tests first, each group in collection order (a stable sort)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Every test: a blocking call made on the running loop from our packages raises
    ``BlockingError`` (sync tests run no loop and are not affected)."""
    with blockbuster_ctx(SCANNED) as bb:
        allow_known_blocking(bb)
        yield bb


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """Every test: the root logger's handlers and level as they were before it. A
    command run in-process (``main([...])``) installs a handler on the stderr of that
    moment, which capsys then closes; left in place, the next test's logs would hit the
    closed file ("--- Logging error ---" in CI, breaking its one-line checks)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoProcess]:
    """A fresh private broker for one test, anonymous access, persistence on."""
    cfg = BrokerConfig(directory=tmp_path / "mosquitto", port=free_port())
    async with MosquittoProcess(cfg) as proc:
        yield proc


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A topic-safe name unique to the test, for stores and gateways."""
    yield request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:40]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HqDb]:
    """An HQ database on each backend (SQLite file, PostgreSQL schema), closed after."""
    with hq_url(request.param, tmp_path) as url:
        d = HqDb(url)
        yield d
        d.close()
