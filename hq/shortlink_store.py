"""HQ's short links on its own database, and the endpoint staff use to mint them.

:class:`DbShortLinkStore` implements :class:`hq.shortlinks.ShortLinkStore` on the
``shortlinks`` table of :mod:`hq.db` (the code is its primary key, so two HQ workers
minting the same code cannot both win: the loser draws again).

Every scan or tap of a short link becomes one event in HQ's ``events`` table with kind
``tap``, ``reason`` ``scan`` (QR, ``?src=qr``) or ``tap`` (NFC, ``?src=nfc``) and
``detail.source`` ``qr`` / ``nfc`` / ``other`` plus the code and tag. That is the same
kind and detail shape the gateway writes when a shopper's app reports a shelf-tag tap
or a QR scan (``detail.source`` ``nfc`` / ``qr`` / ``nfc_reader``), so QR and NFC calls
to action are counted by one query. ``offer_clicked`` is deliberately not used: it is
feedback on a delivered offer (it carries an offer id and an inbox, and analytics uses
it as the CTR numerator); a label scan has neither, and would inflate every campaign's CTR.

``POST /api/shortlinks`` (JSON ``{"url": ..., "tag": ..., "store": ..., "campaign": ...}``)
mints a link, or returns the existing one for the same store, tag, URL and campaign, so
re-running ``aislecast tags write`` or a label sheet for a tag keeps its code. The URL's
host must be one of hq.toml's ``[links] landing_hosts`` (:mod:`hq.landing`; 422 with the
reason otherwise). The printed URLs are built on the configured public address, or on
the address HQ is bound to: never on anything the request says (Host header, body)::

    $ curl -s -X POST http://hq:8080/api/shortlinks -H "Authorization: Bearer $TOKEN" \\
        -d '{"url": "https://shop.example/coffee", "tag": "T-17", "store": "store-1"}'
    {"code": "Ab3xK9q", "short": "http://hq:8080/s/Ab3xK9q",
     "qr": "http://hq:8080/s/Ab3xK9q?src=qr&t=T-17", "nfc": "...?src=nfc&t=T-17", ...}
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import msgspec
from fastapi import APIRouter, Request, Response

from aislecast.kernel.counters import by, count
from aislecast.kernel.errors import AislecastError
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import Event
from hq.db import HqDb
from hq.deps import PrincipalDep, audit, json_answer
from hq.landing import LandingHosts
from hq.openapi import json_body
from hq.shortlinks import DEFAULT_CODE_LEN, ShortLink, is_valid_code, mint_code, short_url
from hq.strict import body_of

__all__ = ["DbShortLinkStore", "MintRequest", "ShortLinkStats", "bound_origin", "make_mint_router"]

log = get_logger(__name__)

#: Inserts before giving up: a unique-key conflict right after mint_code's free check
#: needs another worker minting the same 7-character code in that instant (~1e-12).
_INSERT_ATTEMPTS: Final = 5

_TAG_RE: Final = re.compile(r"[\x21-\x7e]{1,64}")  # as edge.nfc.records' tag fields

EventSink = Callable[[list[Event]], object]


class MintRequest(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    tag: str | None = None
    store: str | None = None
    campaign: str | None = None


@dataclass(slots=True)
class ShortLinkStats:
    minted: int = count("short links minted")
    conflicts: int = count("minted codes that lost an insert race and were drawn again")
    clicks: dict[str, int] = by("source", "short link scans and taps recorded, per source")


def _link(row: tuple[Any, ...]) -> ShortLink:
    return ShortLink(code=row[0], url=row[1], store_id=row[2], tag_id=row[3], campaign_id=row[4])


class DbShortLinkStore:
    """Short links and their clicks on HQ's database; ``sink`` stores click events
    (HQ passes ``Ingest.store_events`` so live listeners see scans like any event)."""

    def __init__(self, db: HqDb, sink: EventSink) -> None:
        self.db = db
        self._sink = sink
        self.stats = ShortLinkStats()

    async def resolve(self, code: str) -> ShortLink | None:
        row = self.db.one("SELECT code, url, store, tag, campaign FROM shortlinks WHERE code = ?",
                          (code,))
        return None if row is None else _link(row)

    def add(self, link: ShortLink) -> bool:
        """Insert ``link``; False when its code is taken (never overwrites)."""
        return self.db.execute(
            "INSERT INTO shortlinks (code, url, store, tag, campaign) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (code) DO NOTHING",
            (link.code, link.url, link.store_id, link.tag_id, link.campaign_id)) == 1

    def find(self, url: str, *, tag: str | None, store: str | None,
             campaign: str | None) -> ShortLink | None:
        """An existing link with exactly these fields (NULLs compare equal here)."""
        rows = self.db.query("SELECT code, url, store, tag, campaign FROM shortlinks WHERE url = ?",
                             (url,))
        for row in rows:
            if (row[2], row[3], row[4]) == (store, tag, campaign):
                return _link(row)
        return None

    async def mint(self, url: str, *, tag: str | None = None, store: str | None = None,
                   campaign: str | None = None, length: int = DEFAULT_CODE_LEN) -> ShortLink:
        """A new link with a fresh code (validated: http(s) URL, base62 code)."""
        for _ in range(_INSERT_ATTEMPTS):
            link = ShortLink(code=await mint_code(self, length=length), url=url, tag_id=tag,
                             store_id=store, campaign_id=campaign)
            if self.add(link):
                self.stats.minted += 1
                return link
            self.stats.conflicts += 1
        raise AislecastError(f"short link insert conflicted {_INSERT_ATTEMPTS} times",
                             hint="check the shortlinks table's primary key and HQ's clock")

    async def record_click(self, link: ShortLink, *, ts: float, user_agent: str | None,
                           source: str) -> None:
        # the user agent is not stored: it would fingerprint shoppers and adds no measure
        detail: dict[str, float | int | str] = {"source": source, "code": link.code}
        if link.tag_id is not None:
            detail["tag"] = link.tag_id
        self._sink([Event(id=uuid.uuid4().hex, kind="tap", ts=ts, store=link.store_id or "",
                          campaign=link.campaign_id, reason="scan" if source == "qr" else "tap",
                          detail=detail)])
        self.stats.clicks[source] = self.stats.clicks.get(source, 0) + 1

    def clicks(self, code: str) -> dict[str, int]:
        """Clicks on ``code`` per source (qr, nfc, other)."""
        out: dict[str, int] = {}
        for (body,) in self.db.query("SELECT body FROM events WHERE kind = 'tap' AND gateway IS NULL"
                                     " AND body LIKE ?", (f'%"code":"{code}"%',)):
            detail = msgspec.json.decode(body).get("detail") or {}
            if detail.get("code") == code:
                src = str(detail.get("source", "other"))
                out[src] = out.get(src, 0) + 1
        return out


def _urls(base: str, link: ShortLink) -> dict[str, str | None]:
    tag = f"&t={quote(link.tag_id, safe='')}" if link.tag_id else ""
    return {"code": link.code, "url": link.url, "tag": link.tag_id, "store": link.store_id,
            "campaign": link.campaign_id, "short": short_url(base, link.code),
            "qr": short_url(base, link.code, source="qr") + tag,
            "nfc": short_url(base, link.code, source="nfc") + tag}


def bound_origin(request: Request) -> str:
    """``scheme://address:port`` of the socket the request arrived on (the address HQ
    is bound to, as the server saw it), never the client-supplied Host header."""
    server = request.scope.get("server")
    scheme = "https" if request.scope.get("scheme") == "https" else "http"
    if not server or server[1] is None:
        return f"{scheme}://127.0.0.1"
    host = str(server[0])
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{server[1]}"


def make_mint_router(store: DbShortLinkStore, *, public_base_url: str | None = None,
                     landing_hosts: LandingHosts | None = None) -> APIRouter:
    """``POST /api/shortlinks`` (mint or reuse) and ``GET /api/shortlinks/{code}`` (clicks).

    URLs are built on ``public_base_url`` (HQ's configured public address) when it is set,
    otherwise on :func:`bound_origin`. ``landing_hosts`` (hq.toml ``[links]``) limits
    where links may land; None leaves any http(s) host allowed (before the allow-list)."""
    router = APIRouter()
    configured = None if public_base_url is None else public_base_url.rstrip("/")

    @router.post("/api/shortlinks", status_code=201, openapi_extra=json_body(MintRequest))
    async def mint_link(request: Request, p: PrincipalDep) -> Response:
        req = await body_of(request, MintRequest)  # 400, or 422 naming an unknown field
        if req.tag is not None and not _TAG_RE.fullmatch(req.tag):
            return json_answer({"detail": "tag: 1-64 printable ASCII characters without spaces"}, 422)
        if not p.sees(req.store):
            return json_answer({"detail": "store: a store staff member mints links for their own "
                          f"stores ({', '.join(sorted(p.stores or ()))}); set \"store\" to one"},
                         403)
        refusal = None if landing_hosts is None else landing_hosts.refuse("mint", req.url)
        if refusal is not None:
            log.warning("short link refused", reason=refusal.code, url=req.url[:200],
                        client=request.client.host if request.client else None)
            return json_answer({"detail": f"url: {req.url[:200]!r} {refusal.message}",
                          "hint": "link only to the retailer's sites, listed in hq.toml as "
                                  "[links] landing_hosts"}, 422)
        base = configured or bound_origin(request)
        link = store.find(req.url, tag=req.tag, store=req.store, campaign=req.campaign)
        if link is not None:
            return json_answer(_urls(base, link), 200)
        try:
            link = await store.mint(req.url, tag=req.tag, store=req.store, campaign=req.campaign)
        except AislecastError as exc:
            return json_answer({"detail": exc.message, "hint": exc.hint}, 422)
        audit(request, "shortlink.mint", f"shortlink:{link.code}", after=_urls(base, link))
        return json_answer(_urls(base, link), 201)

    @router.get("/api/shortlinks/{code}")
    async def link_stats(code: str, request: Request, p: PrincipalDep) -> Response:
        link = await store.resolve(code) if is_valid_code(code) else None
        if link is None or not p.sees(link.store_id):  # another store's: as if none
            return json_answer({"detail": f"short link {code!r} not found"}, 404)
        base = configured or bound_origin(request)
        return json_answer(_urls(base, link) | {"clicks": store.clicks(code)})

    return router
