"""The SQLite outbox: durable, bounded, never reuses a sequence number."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.outbox import Outbox
from gateway.storage import open_db


def test_rows_survive_reopen_and_ids_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    ob = Outbox(open_db(path))
    seqs = ob.add(offers=[("o1", "t/o1", b"{}", time.time() + 60)], events=[("e1", "t/e", b"{}")])
    ob.add(offers=[("o1", "t/o1", b"{}", time.time() + 60)], events=[("e1", "t/e", b"{}")])
    assert len(ob) == 2
    ob.conn.close()
    again = Outbox(open_db(path))
    assert len(again) == 2
    assert [r.id for r in again.pending("offer", limit=10)] == ["o1"]
    assert again.pending("offer", limit=10)[0].seq == seqs[0]


def test_sequence_numbers_are_never_reused_after_deletes(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    ob.add(events=[(f"e{i}", "t", b"{}") for i in range(5)])
    rows = ob.after("event", 0, limit=10)
    cursor = rows[-1].seq
    ob.remove([r.seq for r in rows])
    ob.add(events=[("late", "t", b"{}")])
    newer = ob.after("event", cursor, limit=10)
    assert [r.id for r in newer] == ["late"]  # a cursor reader sees the new row


def test_full_outbox_drops_oldest_events_first_and_counts(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"), max_rows=10)
    ob.add(offers=[(f"o{i}", "t", b"{}", time.time() + 60) for i in range(3)])
    ob.add(events=[(f"e{i}", "t", b"{}") for i in range(12)])
    assert len(ob) == 10
    assert ob.dropped_full == 5
    assert len(ob.pending("offer", limit=10)) == 3  # offers are kept
    assert ob.pending("event", limit=10)[0].id == "e5"


def test_expired_offers_are_dropped_and_counted(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    now = time.time()
    ob.add(offers=[("old", "t", b"{}", now - 1), ("new", "t", b"{}", now + 60)])
    assert ob.drop_expired(now) == 1
    assert [r.id for r in ob.pending("offer", limit=10)] == ["new"]
    assert ob.dropped_expired == 1


def test_checkpoint_copies_the_wal(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    ob.add(events=[(f"e{i}", "t", b"x" * 500) for i in range(200)])
    pages, copied = ob.checkpoint()
    assert pages > 0
    assert copied == pages


def test_offer_seqs_match_the_rows_even_when_an_id_repeats(tmp_path: Path) -> None:
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    exp = time.time() + 60
    first = ob.add(offers=[("a", "t", b"1", exp), ("b", "t", b"2", exp)], events=[("e", "t", b"")])
    again = ob.add(offers=[("c", "t", b"3", exp), ("a", "t", b"1", exp)])
    rows = {r.id: r.seq for r in ob.pending("offer", limit=10)}
    assert first == [rows["a"], rows["b"]]
    assert again == [rows["c"], rows["a"]]
    assert len(ob) == 4
