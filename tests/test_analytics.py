"""Per-campaign analytics: funnel, stop reasons and lift against holdout with its CI
(the lift itself is tested in tests/test_lift.py)."""

from __future__ import annotations

from pathlib import Path

from aislecast.kernel.schema import Event
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.ingest import Ingest
from tests.purchases import add_purchase


def test_campaign_stats_funnel_and_lift(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    ing = Ingest(db)
    ev: list[Event] = []
    for i in range(200):
        inbox = f"i{i}"
        held = i % 4 == 0
        ev.append(Event(id=f"d{i}", kind="decision", ts=1.0, store="s", campaign="c",
                        inbox=inbox, reason="holdout" if held else "offer",
                        offer=None if held else f"o{i}", holdout=True if held else None))
        if not held:
            ev += [Event(id=f"p{i}", kind="offer_published", ts=2, store="s", campaign="c",
                         offer=f"o{i}", inbox=inbox),
                   Event(id=f"v{i}", kind="offer_delivered", ts=2, store="s", campaign="c",
                         offer=f"o{i}", inbox=inbox)]
            if i % 5 == 0:
                ev.append(Event(id=f"k{i}", kind="offer_clicked", ts=3, store="s",
                                campaign="c", offer=f"o{i}", inbox=inbox))
            if i % 3 == 0:
                ev.append(Event(id=f"r{i}", kind="offer_redeemed", ts=3, store="s",
                                campaign="c", offer=f"o{i}", inbox=inbox))
        if i % 3 == 0 if not held else i % 12 == 0:  # the till: a purchase after the offer
            add_purchase(db, store="s", inbox=inbox, ts=5.0, value_cents=400)
    ev.append(Event(id="x", kind="decision", ts=1, store="s", campaign="c", inbox="z",
                    reason="cap_per_visit"))
    ing.store_events(ev)
    [s] = campaign_stats(db)
    assert s.overall is not None
    assert (s.offered, s.holdout, s.impressions, s.deliveries) == (150, 50, 150, 150)
    assert s.stopped == {"cap_per_visit": 1}
    assert s.clicks == 30 and s.ctr == 0.2
    assert s.treated == 150 and s.control == 50 and s.lift_status == "ok"
    assert (s.overall.converted_treated, s.overall.converted_control) == (50, 17)
    assert s.lift is not None and s.lift_lo is not None and s.lift_hi is not None
    assert s.lift_lo < s.lift < s.lift_hi
    assert campaign_stats(db, "nope") == []
