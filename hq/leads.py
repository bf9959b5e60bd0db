"""Leads: the forms shoppers submit on a lead creative (docs/architecture.md#leads).

A lead arrives as a phone's ``Feedback`` of kind ``lead`` carrying ``fields``. HQ checks
the fields against the campaign's lead creatives' forms (:func:`form_problem`: only the
fields a form names, every required one present and non-empty; msgspec already bounded
their number and lengths), then stores one ``lead_submitted`` event (no fields in it)
and one row of ``leads`` (the personal data) under the same id, so a resend stores
nothing twice. The rows are read by campaign (:func:`campaign_leads`, the API's JSON
and CSV) and by shopper (:func:`shopper_leads`, for the export); :mod:`hq.rights`
deletes them on erase.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aislecast.kernel.campaign import Campaign
from aislecast.kernel.schema import decode
from hq.funnel import csv_cell

if TYPE_CHECKING:
    from aislecast.kernel.schema import Feedback
    from hq.db import HqDb

__all__ = ["MAX_LEADS_PAGE", "LeadRow", "campaign_leads", "form_problem", "leads_csv",
           "shopper_leads", "store_lead"]

MAX_LEADS_PAGE: Final = 5_000


class LeadRow(msgspec.Struct, frozen=True):
    id: str
    ts: float
    campaign: str
    store: str
    offer: str
    inbox: str
    fields: dict[str, str]


def form_problem(db: HqDb, fb: Feedback) -> str | None:
    """Why ``fb``'s fields do not fit its campaign's lead form, or None when they do."""
    row = db.one("SELECT body FROM campaigns WHERE id = ?", (fb.campaign,))
    if row is None:
        return "campaign unknown"
    try:
        c = decode(row[0], Campaign)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return "campaign unreadable"
    forms = [cr.form for cr in c.creatives if cr.format == "lead" and cr.form]
    if not forms:
        return "the campaign has no lead form"
    given = fb.fields or {}
    for form in forms:  # the variant is not known here: any of the campaign's forms fits
        names = {f.name for f in form}
        if set(given) <= names and all(given.get(f.name, "").strip()
                                       for f in form if f.required):
            return None
    return "fields do not fit the lead form"


def store_lead(db: HqDb, lead: LeadRow) -> None:
    db.execute("INSERT INTO leads (id, ts, campaign, store, offer, inbox, fields)"
               " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
               (lead.id, lead.ts, lead.campaign, lead.store, lead.offer, lead.inbox,
                json.dumps(lead.fields, separators=(",", ":"))))


def _rows(rows: list[tuple[Any, ...]]) -> list[LeadRow]:
    return [LeadRow(id=r[0], ts=float(r[1]), campaign=r[2], store=r[3], offer=r[4],
                    inbox=r[5], fields=json.loads(r[6])) for r in rows]


_COLUMNS: Final = "id, ts, campaign, store, offer, inbox, fields"


def campaign_leads(db: HqDb, cid: str, *, stores: set[str] | None = None,
                   limit: int = MAX_LEADS_PAGE) -> list[LeadRow]:
    """The newest ``limit`` leads of campaign ``cid`` (of ``stores`` only, if given)."""
    rows = db.query(f"SELECT {_COLUMNS} FROM leads WHERE campaign = ?"  # noqa: S608 - a constant
                    " ORDER BY ts DESC, id LIMIT ?", (cid, limit))
    return [r for r in _rows(rows) if stores is None or r.store in stores]


def shopper_leads(db: HqDb, inbox: str) -> list[dict[str, Any]]:
    rows = db.query(f"SELECT {_COLUMNS} FROM leads WHERE inbox = ? ORDER BY ts, id",  # noqa: S608
                    (inbox,))
    return [msgspec.to_builtins(r) for r in _rows(rows)]


def leads_csv(rows: list[LeadRow]) -> str:
    """One line a lead (RFC 4180, CRLF), a column per form field seen, cells that a
    spreadsheet would run as a formula quoted (``hq.funnel.csv_cell``)."""
    names = sorted({k for r in rows for k in r.fields})
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["id", "ts", "store", "offer", "inbox", *names])
    for r in rows:
        w.writerow([r.id, r.ts, csv_cell(r.store), csv_cell(r.offer), csv_cell(r.inbox),
                    *(csv_cell(r.fields.get(n, "")) for n in names)])
    return out.getvalue()
