"""A full disk never crashes the gateway or loses what it decided; shutdown keeps acks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.outbox import Outbox, OutboxError
from gateway.publisher import OutboxPublisher
from gateway.storage import open_db


def _full(ob: Outbox) -> None:
    pages = ob.conn.execute("PRAGMA page_count").fetchone()[0]
    ob.conn.execute(f"PRAGMA max_page_count = {pages}")


def test_disk_full_raises_a_clear_error_and_keeps_the_count(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    ob.add(events=[(f"e{i}", "t", b"x") for i in range(10)])
    _full(ob)
    with pytest.raises(OutboxError) as err:
        ob.add(events=[(f"big{i}", "t", b"y" * 4000) for i in range(50)])
    assert "disk" in str(err.value).lower() or "full" in str(err.value).lower()
    assert len(ob) == 10 == ob.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def test_publisher_keeps_acks_when_the_write_fails_and_commits_them_later(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    seq = ob.add(offers=[("o1", "t", b"{}", time.time() + 60)])[0]
    pub = OutboxPublisher(ob, events_topic="t", batch_header=b"")
    pub._acked.append(seq)
    pub._ack_events.append(("pub1", "t", b"z" * 8000))
    _full(ob)
    assert pub.flush() is False  # the disk is full: nothing lost, nothing raised
    assert pub.stats.write_failures == 1
    ob.conn.execute("PRAGMA max_page_count = 1073741823")
    assert pub.flush() is True  # space again: the ack and its event land together
    assert ob.pending("offer", limit=5) == []
    assert [r.id for r in ob.pending("event", limit=5)] == ["pub1"]


def test_shutdown_flush_means_an_acked_offer_is_not_published_again(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    ob = Outbox(open_db(path))
    seq = ob.add(offers=[("o1", "t", b"{}", time.time() + 60)])[0]
    pub = OutboxPublisher(ob, events_topic="t", batch_header=b"")
    pub._acked.append(seq)  # the broker's PUBACK arrived just before SIGTERM
    pub.flush()  # what Gateway.run does on the way out
    ob.conn.close()
    again = Outbox(open_db(path))
    assert again.pending("offer", limit=5) == []
