"""Shared fixtures: a private Mosquitto per test session, on a free port (docs/architecture.md#mosquitto)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port


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
