"""HQ's short links: ``GET /s/{code}`` counts a QR scan or NFC tap and redirects.

A shelf label's QR code and its NFC tag carry the same short link,
``https://HQ/s/CODE``, told apart only by ``?src=qr`` / ``?src=nfc``, so both calls to
action are counted by one endpoint in one way. The router is built around an injected
:class:`ShortLinkStore` (the lead wires the real database store; tests use an
in-memory one), so nothing here is global.

Example::

    app = FastAPI()
    app.include_router(make_shortlink_router(store))
    code = await mint_code(store)          # a fresh base62 code, not yet in the store
    short_url("https://hq.example", code, source="qr")
    # -> 'https://hq.example/s/<code>?src=qr'
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from aislecast.kernel.errors import AislecastError
from aislecast.kernel.logs import get_logger
from aislecast.kernel.shortlinks import (
    CODE_ALPHABET,
    CODE_MAX_LEN,
    CODE_MIN_LEN,
    DEFAULT_CODE_LEN,
    Source,
    is_valid_code,
    short_url,
)
from hq.landing import LandingHosts

__all__ = [
    "CODE_ALPHABET",
    "CODE_MAX_LEN",
    "CODE_MIN_LEN",
    "DEFAULT_CODE_LEN",
    "ShortLink",
    "ShortLinkStore",
    "Source",
    "is_valid_code",
    "make_shortlink_router",
    "mint_code",
    "short_url",
]

log = get_logger(__name__)

# Draws before giving up: with 62**7 codes, eight collisions in a row means the
# store is broken (e.g. resolve() answers every code), not that the space is full.
_MINT_ATTEMPTS: Final = 8
# The shopper-facing refusals of GET /s/{code} are pages, not JSON (the OpenAPI says so).
_HTML: Final = {"text/html": {"schema": {"type": "string"}}}


@dataclass(frozen=True, slots=True)
class ShortLink:
    """One short link: its code, where it lands, and what printed/written it."""

    code: str
    url: str
    tag_id: str | None = None
    store_id: str | None = None
    campaign_id: str | None = None

    def __post_init__(self) -> None:
        if not is_valid_code(self.code):
            raise AislecastError(
                f"short link code {self.code!r} is not {CODE_MIN_LEN}-{CODE_MAX_LEN} "
                "base62 characters",
                hint="mint codes with hq.shortlinks.mint_code()",
            )
        parts = urlsplit(self.url)
        # Only web pages: a stored javascript: or data: URL would turn the redirect into
        # an attack on every shopper who scans the label.
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise AislecastError(
                f"short link {self.code}: landing URL {self.url!r} is not an http(s) URL",
                hint="store an absolute https:// landing page URL",
            )


class ShortLinkStore(Protocol):
    """Where short links live and clicks are counted (the real one is HQ's database)."""

    async def resolve(self, code: str) -> ShortLink | None:
        """The link for ``code``, or None when there is none."""
        ...

    async def record_click(
        self, link: ShortLink, *, ts: float, user_agent: str | None, source: str
    ) -> None:
        """Count one scan or tap of ``link`` (``source`` is "qr", "nfc" or "other")."""
        ...


async def mint_code(
    store: ShortLinkStore,
    *,
    length: int = DEFAULT_CODE_LEN,
    choice: Callable[[str], str] = secrets.choice,
) -> str:
    """A random base62 code that ``store`` does not know yet.

    The check is advisory: two HQ workers can mint the same code between the check and
    the insert, so the real store must also hold a unique index on the code and the
    caller retry on a conflict. ``choice`` is injectable for deterministic tests.
    """
    if not CODE_MIN_LEN <= length <= CODE_MAX_LEN:
        raise AislecastError(
            f"short code length {length} is outside {CODE_MIN_LEN}..{CODE_MAX_LEN}",
            hint=f"use the default of {DEFAULT_CODE_LEN}",
        )
    for _ in range(_MINT_ATTEMPTS):
        code = "".join(choice(CODE_ALPHABET) for _ in range(length))
        if await store.resolve(code) is None:
            return code
    raise AislecastError(
        f"no free short code after {_MINT_ATTEMPTS} draws of length {length}",
        hint="check that the short link store's resolve() answers None for unknown codes",
    )


def _page(title: str, body: str, status_code: int) -> HTMLResponse:
    text = (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title, quote=False)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;"
        "padding:0 1rem;line-height:1.5;color:#222}</style></head>"
        f"<body><h1>{html.escape(title, quote=False)}</h1>"
        f"<p>{html.escape(body, quote=False)}</p></body></html>\n"
    )
    return HTMLResponse(text, status_code=status_code, headers={"Cache-Control": "no-store"})


def make_shortlink_router(
    store: ShortLinkStore, *, landing_hosts: LandingHosts | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """A router serving ``GET /s/{code}`` from ``store``; ``clock`` stamps the clicks.

    With ``landing_hosts`` (hq.toml ``[links]``) a stored link whose host is not (or no
    longer) allowed answers 410 with a page saying so, never a redirect. None keeps the
    unchecked behaviour of before the allow-list, with a warning at start."""
    router = APIRouter()
    if landing_hosts is None:
        log.warning("short links redirect to any http(s) host: no landing host allow-list",
                    hint="set [links] landing_hosts in hq.toml")

    @router.get("/s/{code}", response_class=Response, include_in_schema=True, responses={
        302: {"description": "to the link's URL (not cached: every scan is counted)"},
        400: {"description": "a malformed code: a page saying so", "content": _HTML},
        404: {"description": "no such link: a page saying so", "content": _HTML},
        410: {"description": "the landing host is no longer allowed", "content": _HTML}})
    async def follow_short_link(code: str, request: Request, src: str | None = None) -> Response:
        if not is_valid_code(code):
            return _page(
                "That link doesn't look right",
                "The code in this link is malformed. Please scan the label or tap the "
                "tag again.",
                400,
            )
        link = await store.resolve(code)
        if link is None:
            return _page(
                "This offer isn't available",
                "The link may have expired or the label may be out of date. Ask a member "
                "of staff, or look for the offer in the store's app.",
                404,
            )
        refusal = None if landing_hosts is None else landing_hosts.refuse("follow", link.url)
        if refusal is not None:
            log.warning("short link not followed: landing host not allowed", code=code,
                        reason=refusal.code, client=request.client.host if request.client else None)
            return _page(
                "This link has been retired",
                "The page this label pointed to is no longer one of the retailer's sites. "
                "Ask a member of staff, or look for the offer in the store's app.",
                410,
            )
        # A hand-typed or shared link carries no (or a bogus) src: still redirect, and
        # count it apart so QR and NFC numbers stay clean.
        source: Source = "qr" if src == "qr" else "nfc" if src == "nfc" else "other"
        try:
            await store.record_click(
                link, ts=clock(), user_agent=request.headers.get("user-agent"), source=source
            )
        except Exception:
            log.exception("recording a click on a short link failed", code=code)
        # 302, not 301: browsers cache 301s, and every scan must reach us to be counted.
        return RedirectResponse(
            link.url, status_code=302, headers={"Cache-Control": "no-store"}
        )

    return router
