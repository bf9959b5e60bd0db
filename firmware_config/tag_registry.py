"""Register a written shelf tag at HQ (``PUT /api/stores/{store}/tags/{tag}``), so HQ
knows which tag sits where and carries which short link, when and by whom.

``aislecast tags write --hq URL --store ID`` calls :func:`register_tag` once the tag is
written and verified; the token is the staff member's (``AISLECAST_HQ_TOKEN``), and HQ
records that actor as ``written_by``.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import msgspec

from aislecast.kernel.errors import AislecastError, ConfigError
from aislecast.kernel.httpclient import hq_ca, hq_request
from firmware_config.qr import HQ_TOKEN_ENV

__all__ = ["register_tag"]


def register_tag(hq: str, store: str, tag_id: str, *, url: str, code: str | None = None,
                 zone: str | None = None, product: str | None = None,
                 campaign: str | None = None, ca: str | None = None,
                 timeout: float = 10.0) -> dict[str, object]:
    """HQ's record of the tag (as its JSON); :class:`ConfigError` when HQ refuses it
    (an unknown store or zone: the message is HQ's, naming it)."""
    token = os.environ.get(HQ_TOKEN_ENV)
    if not token:
        raise ConfigError(HQ_TOKEN_ENV, "is not set: HQ registers tags for signed-in staff only")
    fields = {"url": url, "code": code, "zone": zone, "product": product, "campaign": campaign,
              "written_at": time.time()}
    endpoint = (f"{hq.rstrip('/')}/api/stores/{quote(store, safe='')}"
                f"/tags/{quote(tag_id, safe='')}")
    req = urllib.request.Request(  # noqa: S310 - hq_request allows http(s) only
        endpoint, method="PUT",
        data=msgspec.json.encode({k: v for k, v in fields.items() if v is not None}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        reply = hq_request(req, ca=hq_ca(ca), timeout=timeout)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise ConfigError("hq", f"the tag was written, but HQ did not register it "
                          f"({exc.code}): {detail}",
                          hint=f"check that store {store!r} and its zone exist at HQ "
                               "(GET /api/stores), then write the tag again") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AislecastError(f"the tag was written, but HQ at {hq} was not reachable to "
                             f"register it: {exc}", hint="write the tag again once HQ answers") from exc
    try:
        return msgspec.json.decode(reply.body, type=dict[str, object])
    except msgspec.DecodeError as exc:
        raise AislecastError(f"HQ at {hq} answered something that is not a tag record",
                             hint="is --hq the HQ API's address?") from exc
