"""A campaign's funnel from the rollups (hq.rollup_schema), whole or broken down.

:func:`funnel` answers from the coarsest rollup that holds every column the question
needs: the console's per-campaign numbers and the by-store breakdown read
``rollup_totals`` (a few rows per campaign and store), the hourly series
``rollup_campaign_hours`` (summed in SQL to a row per hour by :func:`_pivoted`: the
series is the one answer with thousands of groups), and a breakdown by zone, variant or trigger, or an hourly
series of chosen stores, ``rollup_hours``; :func:`funnel_totals` gives
:func:`hq.analytics.campaign_stats` its counts the same way (:func:`tally` turns a
rollup's kind, reason and count into funnel fields). Counts are events; the whole
funnel and the by-store and by-variant rows also carry ``shoppers``, the different
shoppers per stage (:mod:`hq.reach`), over all time only: ``None`` with ``since`` or
``until``, by zone, hour or trigger, and by variant for chosen stores.

    rows = funnel(db, "coffee", by="variant", since=time.time() - 7 * 86400)
    text = to_csv(rows, "variant")
"""

from __future__ import annotations

import csv
import functools
import io
import time
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from hq.reach import STAGES, Reach, reach_by, reach_of
from hq.rollup_schema import ROLLUPS, hour_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from hq.db import HqDb

__all__ = ["BREAKDOWNS", "Breakdown", "FunnelRow", "copy_counts", "csv_cell", "finish", "funnel",
           "funnel_totals", "tally", "to_csv"]

Breakdown = Literal["store", "zone", "hour", "variant", "trigger"]
BREAKDOWNS: Final[tuple[Breakdown, ...]] = ("store", "zone", "hour", "variant", "trigger")
_COLUMN: Final = {"store": "store", "zone": "zone", "hour": "hour", "variant": "variant",
                  "trigger": "trigger_kind"}
_KIND_FIELD: Final = {
    "offer_published": "impressions",
    "offer_delivered": "deliveries",
    "offer_opened": "opens",
    "offer_clicked": "clicks",
    "offer_redeemed": "redemptions",
    "offer_dismissed": "dismissals",
    "lead_submitted": "leads",
}
_COUNTS: Final = ("decisions", "offered", "holdout", "stopped_total", "impressions",
                  "deliveries", "opens", "clicks", "redemptions", "dismissals", "taps", "scans", "leads")
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


class _Funnel(Protocol):
    stopped: dict[str, int]
    clicks: int
    opens: int
    deliveries: int
    ctr: float
    open_rate: float


class FunnelRow(msgspec.Struct):
    """One group of a breakdown (``key`` None: no value, or the whole funnel)."""

    key: str | None = None
    decisions: int = 0
    offered: int = 0
    holdout: int = 0
    stopped: dict[str, int] = msgspec.field(default_factory=dict)
    impressions: int = 0
    deliveries: int = 0
    opens: int = 0
    clicks: int = 0
    redemptions: int = 0
    dismissals: int = 0
    taps: int = 0  # NFC taps (short link ?src=nfc, the app's tag taps, the gateway's reader)
    scans: int = 0  # QR scans
    leads: int = 0  # lead forms submitted (hq.leads)
    ctr: float = 0.0
    open_rate: float = 0.0
    shoppers: Reach | None = None  # different shoppers per stage (hq.reach); None: not kept

    @property
    def stopped_total(self) -> int:
        return sum(self.stopped.values())


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=256)
def _fields(kind: str, reason: str) -> tuple[tuple[str, ...], bool]:
    """The counts an event of ``kind``/``reason`` adds to, and whether it is a stop reason."""
    if kind == "decision":
        if reason in ("offer", "holdout"):
            return ("decisions", "offered" if reason == "offer" else "holdout"), False
        return ("decisions",), True
    if kind == "tap":
        return ("scans" if reason == "scan" else "taps",), False
    return ((_KIND_FIELD[kind],) if kind in _KIND_FIELD else ()), False


def tally(s: _Funnel, kind: str, reason: str, n: int) -> None:
    """Add ``n`` events of ``kind``/``reason`` to the funnel ``s``."""
    names, stopped = _fields(kind, reason)
    for name in names:
        setattr(s, name, getattr(s, name) + n)
    if stopped:
        s.stopped[reason] = s.stopped.get(reason, 0) + n


def copy_counts(dst: _Funnel, src: FunnelRow) -> None:
    """Every count of ``src`` (and its stop reasons) into ``dst``."""
    for name in _COUNTS:
        if name != "stopped_total":
            setattr(dst, name, getattr(src, name))
    dst.stopped = dict(src.stopped)


def finish(s: _Funnel) -> None:
    """Rates from the counts: clicks and opens per delivery."""
    s.ctr = round(s.clicks / s.deliveries, 4) if s.deliveries else 0.0
    s.open_rate = round(s.opens / s.deliveries, 4) if s.deliveries else 0.0


def _grouped(db: HqDb, table: str, col: str | None, where: str, params: list[object], *,
             unique: bool = False) -> dict[Any, FunnelRow]:
    """value of ``col`` (None: one group) -> its funnel, over ``table``'s rows ``where``.
    ``unique``: each (``col``, kind, reason) is one row there already (``col`` and the
    fixed columns are the table's whole key), so nothing is summed in SQL."""
    sel = col or "''"
    sql = (f"SELECT {sel}, kind, reason, n FROM {table} WHERE {where}" if unique  # noqa: S608
           else f"SELECT {sel}, kind, reason, CAST(sum(n) AS BIGINT) FROM {table}"  # noqa: S608
                f" WHERE {where} GROUP BY {col + ', ' if col else ''}kind, reason")
    rows: dict[Any, FunnelRow] = {}  # str values, or int hours
    for value, kind, reason, n in db.query(sql, params):
        row = rows.get(value)
        if row is None:
            row = rows[value] = FunnelRow()
        tally(row, kind, reason, n)
    for row in rows.values():
        finish(row)
    return rows


def _when(kind: str, reason: str | None = None, *, not_reason: bool = False) -> str:
    cond = f"kind = '{kind}'"
    if reason is not None:
        cond += f" AND reason {'<>' if not_reason else '='} '{reason}'"
    return cond


#: Each count of a funnel row as a condition on a rollup row's kind and reason: what
#: :func:`tally` adds, for :func:`_pivoted` to sum in SQL (tests compare the two).
_PIVOT: Final = (
    ("decisions", _when("decision")),
    ("offered", _when("decision", "offer")),
    ("holdout", _when("decision", "holdout")),
    *((name, _when(kind)) for kind, name in _KIND_FIELD.items()),
    ("scans", _when("tap", "scan")),
    ("taps", _when("tap", "scan", not_reason=True)),
)
_STOPPED: Final = "kind = 'decision' AND reason NOT IN ('offer', 'holdout')"


def _pivoted(db: HqDb, table: str, where: str, params: list[object], *,
             unique: bool) -> dict[Any, FunnelRow]:
    """hour -> its funnel, as :func:`_grouped` by ``hour`` gives it, but summed in SQL:
    one row per hour (each count a ``sum(n) FILTER (...)``, the stop reasons one string
    of JSON members, each reason quoted by the database), not one per hour, kind and
    reason for Python to tally. ``unique``: (hour, kind, reason) is one row of
    ``table`` already; otherwise they are summed first, so a reason appears once."""
    rows_sql = (f"SELECT hour, kind, reason, n FROM {table} WHERE {where}" if unique  # noqa: S608
                else f"SELECT hour, kind, reason, sum(n) AS n FROM {table}"  # noqa: S608
                     f" WHERE {where} GROUP BY hour, kind, reason")
    sums = ", ".join(f"sum(n) FILTER (WHERE {cond})" for _, cond in _PIVOT)
    quoted, concat = (("to_json(reason)::text", "string_agg") if db.dialect == "postgresql"
                      else ("json_quote(reason)", "group_concat"))
    sql = (f"SELECT hour, {sums}, {concat}({quoted} || ':' || n, ',')"  # noqa: S608
           f" FILTER (WHERE {_STOPPED}) FROM ({rows_sql}) r GROUP BY hour")
    out: dict[Any, FunnelRow] = {}
    names = [name for name, _ in _PIVOT]
    for hour, *counts, stopped in db.query(sql, params):
        row = out[hour] = FunnelRow()
        for name, v in zip(names, counts, strict=True):
            if v is not None:  # NULL: no row of that kind that hour
                setattr(row, name, int(v))
        if stopped is not None:  # NULL: no stop that hour
            row.stopped = {str(k): int(v) for k, v in
                           msgspec.json.decode(f"{{{stopped}}}").items()}
        finish(row)
    return out


def funnel_totals(db: HqDb) -> dict[str, FunnelRow]:
    """Every campaign's whole funnel, from ``rollup_totals`` (the console's poll)."""
    return {str(c): row for c, row in
            _grouped(db, "rollup_totals", "campaign", "campaign <> ''", []).items()}


@functools.lru_cache(maxsize=1 << 16)  # the same 90 days of hours, poll after poll
def _hour_key(hour: int) -> str:
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour))


def _key(by: Breakdown | None, value: object) -> str | None:
    if by == "hour":
        return _hour_key(int(value))  # type: ignore[call-overload]
    return None if by is None or value == "" else str(value)


def funnel(db: HqDb, campaign: str, *, by: Breakdown | None = None,
           stores: Iterable[str] | None = None, since: float | None = None,
           until: float | None = None) -> list[FunnelRow]:
    """``campaign``'s funnel, one row per value of ``by`` (one row in all without; none
    when nothing was counted); only ``stores`` when given; hours from the one holding
    ``since`` to before ``until``."""
    need = {"campaign"} | ({_COLUMN[by]} if by else set())
    where, params = ["campaign = ?"], list[object]([campaign])
    if since is not None or until is not None:
        need.add("hour")
    if since is not None:
        where.append("hour >= ?")
        params.append(hour_of(since))
    if until is not None:
        where.append("hour < ?")
        params.append(until)
    chosen = None if stores is None else sorted(set(stores))
    if chosen is not None:
        if not chosen:
            return []
        need.add("store")
        where.append(f"store IN ({', '.join('?' * len(chosen))})")
        params += chosen
    table = next(r for r in ROLLUPS if need <= set(r.dims))
    unique = by is not None and set(table.dims) == need
    rows = (_pivoted(db, table.table, " AND ".join(where), params, unique=unique)
            if by == "hour" else
            _grouped(db, table.table, _COLUMN[by] if by else None, " AND ".join(where), params,
                     unique=unique))
    out = []
    for value in sorted(rows):
        rows[value].key = _key(by, value)
        out.append(rows[value])
    if since is None and until is None:
        _add_shoppers(db, campaign, out, by, chosen)
    return out


def _add_shoppers(db: HqDb, campaign: str, rows: list[FunnelRow], by: Breakdown | None,
                  stores: list[str] | None) -> None:
    """Each row's ``shoppers`` where :mod:`hq.reach` keeps them: the whole funnel, by
    store, by variant of every store (not the row of events without a variant)."""
    if by is None:
        for row in rows:
            row.shoppers = reach_of(db, campaign, stores)
    elif by == "store" or (by == "variant" and stores is None):
        got = reach_by(db, campaign, by, stores)
        for row in rows:
            if row.key is not None:
                row.shoppers = got.get(row.key, Reach())


def _cell(value: object) -> object:
    # a cell a spreadsheet would run as a formula is quoted as text ("CSV injection")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


csv_cell = _cell  # for the other CSV exports (hq.leads)


_SHOPPERS: Final = tuple(STAGES.values())


def to_csv(rows: Iterable[FunnelRow], by: Breakdown | None) -> str:
    """``rows`` as CSV (RFC 4180 quoting, CRLF lines), a header row first; the
    different shoppers last (``shoppers_<count>``, empty where not kept)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([by or "campaign_total", *_COUNTS, "ctr", "open_rate",
                *(f"shoppers_{c}" for c in _SHOPPERS)])
    for r in rows:
        reach = [""] * len(_SHOPPERS) if r.shoppers is None else [
            getattr(r.shoppers, c) for c in _SHOPPERS]
        w.writerow([_cell(r.key or ""), *(getattr(r, c) for c in _COUNTS), r.ctr, r.open_rate,
                    *reach])
    return out.getvalue()
