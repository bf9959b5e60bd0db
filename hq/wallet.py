"""The shoppers' web wallet, an installable PWA at ``/wallet`` (docs/architecture.md#wallet).

The pages are plain files in ``hq/static/wallet/`` and the vendored browser libraries
in ``hq/static/vendor/`` (MQTT.js, a QR generator, a QR decoder; versions and licences
in its README.md): no build step, nothing from a CDN. Every page carries a
Content-Security-Policy without inline scripts whose ``connect-src`` is HQ itself and
the broker's WebSockets origin (:class:`hq.wallet_api.WalletSettings`). The service
worker (``/wallet/sw.js``, scope ``/wallet/``) caches the shell only: offers come over
MQTT and the JSON routes are never cached.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from hq.login_limits import LoginLimiter
from hq.refusals import Refused
from hq.wallet_api import WalletSettings, WalletState, wallet_api_router

__all__ = ["SHELL", "VENDOR", "content_security_policy", "mount_wallet"]

_STATIC: Final = files("hq") / "static"
#: The wallet's shell: file name -> media type (what the service worker caches).
SHELL: Final = {
    "index.html": "text/html; charset=utf-8",
    "wallet.js": "text/javascript; charset=utf-8",
    "wallet-crypto.js": "text/javascript; charset=utf-8",
    "wallet-sense.js": "text/javascript; charset=utf-8",
    "lead.js": "text/javascript; charset=utf-8",  # a lead creative's form
    "wallet.css": "text/css; charset=utf-8",
    "manifest.webmanifest": "application/manifest+json",
    "sw.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
#: The vendored libraries the wallet loads.
VENDOR: Final = {
    "mqtt.min.js": "text/javascript; charset=utf-8",
    "qrcode.js": "text/javascript; charset=utf-8",
    "jsQR.js": "text/javascript; charset=utf-8",
}


# read once, at import (the files ship in the package and never change while HQ runs)
_BODIES: Final = {name: (_STATIC / "wallet" / name).read_bytes() for name in SHELL}
_VENDOR_BODIES: Final = {name: (_STATIC / "vendor" / name).read_bytes() for name in VENDOR}


def _origin(url: str | None) -> str:
    """The ``connect-src`` source of the broker URL (scheme, host and port)."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in {"ws", "wss"} and parts.netloc else ""


def content_security_policy(settings: WalletSettings) -> str:
    broker = _origin(settings.broker_url)
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'",
        "img-src 'self' data: blob:", "media-src 'self' blob:", "manifest-src 'self'",
        "worker-src 'self'", f"connect-src 'self' {broker}".strip(), "base-uri 'none'",
        "form-action 'self'", "frame-ancestors 'none'",
    ])


def _headers(settings: WalletSettings, media: str) -> dict[str, str]:
    h = {"Content-Security-Policy": content_security_policy(settings),
         "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
         "Cache-Control": "no-cache"}
    if media.startswith("text/html"):
        h["Permissions-Policy"] = "camera=(self), geolocation=()"
    return h


def mount_wallet(app: FastAPI, settings: WalletSettings | None = None) -> None:
    """Serve the wallet on ``app`` (its settings and enrolment limiter in ``app.state.wallet``)."""
    settings = settings or WalletSettings()
    app.state.wallet = WalletState(settings, LoginLimiter(settings.enrol_limits))
    bodies, vendor = _BODIES, _VENDOR_BODIES
    router = APIRouter()

    def _serve(request: Request, body: bytes, media: str) -> Response:
        current = WalletState.of(request).settings
        return Response(body, media_type=media, headers=_headers(current, media))

    @router.get("/wallet", include_in_schema=False)
    async def wallet_root() -> Response:
        return RedirectResponse("/wallet/", status_code=308)

    @router.get("/wallet/", include_in_schema=False)
    async def wallet_index(request: Request) -> Response:
        return _serve(request, bodies["index.html"], SHELL["index.html"])

    @router.get("/wallet/vendor/{name}", include_in_schema=False)
    async def wallet_vendor(name: str, request: Request) -> Response:
        if name not in vendor:
            raise Refused(404, "no_such_file", f"no wallet library {name[:64]!r}")
        return _serve(request, vendor[name], VENDOR[name])

    app.include_router(wallet_api_router())  # /wallet/config, stores, enroll

    @router.get("/wallet/{name}", include_in_schema=False)
    async def wallet_file(name: str, request: Request) -> Response:
        if name not in bodies:
            raise Refused(404, "no_such_file", f"no wallet file {name[:64]!r}")
        resp = _serve(request, bodies[name], SHELL[name])
        if name == "sw.js":
            resp.headers["Service-Worker-Allowed"] = "/wallet/"
        return resp

    app.include_router(router)
