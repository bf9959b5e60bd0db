"""Visits survive gateway restarts (gateway/visits.py): unit rules with an injected clock,
then a real restart mid-visit on the broker, where the capped offer must not repeat."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from aislecast.kernel.broker import MosquittoProcess
from edge.simstore import SimShopper
from gateway.storage import open_db
from gateway.visits import VisitBook
from tests.harness import STORE, enter_campaign, stack
from tests.harness import until as _until

T0 = 1_750_000_000.0


def _book(path: Path, now: float, **kw: float) -> tuple[sqlite3.Connection, VisitBook]:
    conn = open_db(path)
    return conn, VisitBook(conn, absence_s=6.0, now=now, **kw)


def test_visit_continues_while_seen_and_ends_on_exit(tmp_path: Path) -> None:
    _, book = _book(tmp_path / "g.sqlite", T0)
    v = book.visit("a", T0)
    book.sync(T0 + 1, ["a"])
    assert book.visit("a", T0 + 5) == v
    book.end("a")
    assert book.visit("a", T0 + 6) != v


def test_tap_only_shopper_keeps_visit_until_idle(tmp_path: Path) -> None:
    _, book = _book(tmp_path / "g.sqlite", T0, idle_s=60.0)
    v = book.visit("a", T0)
    book.sync(T0 + 1, [])
    assert book.visit("a", T0 + 50) == v  # not in a zone: the idle window applies
    assert book.visit("a", T0 + 200) != v
    book.sync(T0 + 400, [], force=True)
    assert book.current("a") is None  # expired and pruned


def test_restart_resumes_visit_and_does_not_count_downtime(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    conn, book = _book(path, T0)
    v = book.visit("a", T0)
    gone = book.visit("b", T0)
    book.sync(T0 + 3, ["a", "b"])
    book.end("b")
    book.sync(T0 + 4, ["a"], force=True)  # the gateway stops here
    conn.close()
    # down for 60 s, far longer than the 6 s absence: downtime is not absence
    conn, again = _book(path, T0 + 64)
    assert again.resumed == 1 and again.downtime_s == 60.0
    assert again.current("b") is None  # its visit ended before the stop
    assert again.visit("a", T0 + 66) == v  # 2 s of watched time after the restart
    assert again.visit("b", T0 + 66) != gone
    conn.close()
    # seen again only after the absence window of watched time: a new visit
    _, late = _book(path, T0 + 70)
    assert late.visit("a", T0 + 70 + 8) != v


def test_long_downtime_or_clock_back_ends_every_visit(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    conn, book = _book(path, T0)
    v = book.visit("a", T0)
    book.sync(T0, ["a"], force=True)
    conn.close()
    conn, after = _book(path, T0 + 3600, max_down_s=900.0)
    assert after.resumed == 0 and after.visit("a", T0 + 3600) != v
    after.sync(T0 + 3600, ["a"], force=True)
    conn.close()
    _, back = _book(path, T0 - 100)  # the clock went backwards
    assert back.resumed == 0
    assert back.current("a") is None




async def test_restart_mid_visit_keeps_the_per_visit_cap(broker: MosquittoProcess,
                                                          tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("entrance", cap=1)]) as st:
        e = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw1 = await st.start_gateway()
        phone = st.phone(e)
        async with phone:
            await phone.link.wait_connected(10)
            # in the entrance for the whole test (it ends sooner): a restart late in a slow run
            # must still find the shopper there
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 600.0)],
                                          start=time.monotonic(), speed_mps=5.0))
            await _until(lambda: phone.stats.offers_received >= 1)
            visit = gw1.parts.visits.current(e.inbox)
            assert visit is not None
            await st.stop_gateway(gw1)  # restart mid-visit, same name and data dir
            gw2 = await st.start_gateway()
            reasons: list[str] = []
            gw2.listeners.append(lambda kind, d: reasons.append(d["reason"])
                                 if kind == "enter" and d["inbox"] == e.inbox else None)
            await _until(lambda: bool(reasons))
            assert gw2.parts.visits.resumed >= 1
            assert gw2.parts.visits.current(e.inbox) == visit
            assert reasons[0] == "cap_per_visit"  # the witness: re-entry decided, capped
            assert gw2.parts.recorder.stats.offers == 0  # offers are counted as they are decided
            assert phone.stats.offers_received == 1
