"""NFC fixtures: a distinct UDP port below 32768 per test, and a shelf tag message."""

from __future__ import annotations

import pytest

from edge.nfc.emulator import free_udp_port
from edge.nfc.records import TagInfo, encode_message


@pytest.fixture
def port() -> int:
    return free_udp_port()


@pytest.fixture
def message() -> bytes:
    return encode_message(
        uri="https://hq.example/s/Ab3x?src=nfc&t=T-17", title="Milk deals",
        info=TagInfo(tag_id="T-17", zone="dairy", product="milk-1l"),
    )
