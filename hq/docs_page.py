"""``/docs``: the API reference (Redoc) on HQ's own OpenAPI, served by HQ itself with no
CDN, so the API can be learnt on a store's network or a laptop with no Internet.

Redoc is vendored as one file, ``hq/static/vendor/redoc.standalone.js`` (version and
licence in ``hq/static/vendor/README.md``), served from ``/docs/static/``; the page
loads nothing from anywhere else (no web fonts either). Redoc rather than Swagger UI:
the ``swagger-ui-bundle`` package on PyPI ships Swagger UI 4, which cannot render the
OpenAPI 3.1 that FastAPI writes.

Like ``/openapi.json``, ``/docs`` is public and read-only: the schema describes shapes
and roles, never data, and the page calls nothing but ``/openapi.json``. FastAPI's own
``/docs`` and ``/redoc``, which load from a CDN, are switched off in
:func:`hq.api.create_app`.
"""

from __future__ import annotations

import html
from importlib.resources import files
from typing import Final

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["CSP", "DOCS_PATH", "DOCS_STATIC", "docs_html", "mount_docs"]

DOCS_PATH: Final = "/docs"
DOCS_STATIC: Final = "/docs/static"
_VENDOR = files("hq") / "static" / "vendor"
# Redoc's sidebar shows a logo from its CDN unconditionally: the browser is told to fetch
# nothing but HQ's own files (styles inline: Redoc writes them; its search worker: blob:)
CSP: Final = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
              " script-src 'self'; worker-src 'self' blob:; connect-src 'self'")


def docs_html(title: str, openapi_url: str) -> str:
    """The page: Redoc from :data:`DOCS_STATIC` rendering ``openapi_url``."""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title>"
            "<style>body{margin:0;font-family:system-ui,sans-serif}</style></head><body>"
            f"<redoc spec-url=\"{html.escape(openapi_url)}\" hide-download-button></redoc>"
            f"<script src=\"{DOCS_STATIC}/redoc.standalone.js\"></script></body></html>\n")


def mount_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve the reference at :data:`DOCS_PATH` for ``openapi_url``."""
    page = docs_html(f"{app.title} API", openapi_url)

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache",
                                                  "Content-Security-Policy": CSP})

    app.mount(DOCS_STATIC, StaticFiles(directory=str(_VENDOR)), name="docs-static")
