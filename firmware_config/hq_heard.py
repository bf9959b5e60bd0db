"""What the gateways hear, from HQ: ``GET /api/stores/{store}/health`` turned into the
:class:`firmware_config.check.Heard` list that ``aislecast beacons check`` judges, so the
placement check needs no hand-made heard.json (``beacons check --from-hq URL --store ID``).

The token is the staff member's (``AISLECAST_HQ_TOKEN``, as for ``tags write``). Each
beacon that an online gateway reports as heard becomes one entry: its freshest RSSI and
TLM battery, ``receiver`` the gateway that heard it, ``last_seen`` HQ's clock minus the
sighting's age at that gateway's report minus the report's age. Beacons no gateway heard
are left out, so the check calls them missing.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from urllib.parse import quote

import msgspec

from aislecast.kernel.errors import AislecastError, ConfigError
from aislecast.kernel.httpclient import hq_ca, hq_request
from firmware_config.check import Heard
from firmware_config.qr import HQ_TOKEN_ENV

__all__ = ["fetch_heard", "heard_from_health"]


class _Beacon(msgspec.Struct, kw_only=True):
    id: str
    reported: bool = False
    heard_by: str | None = None
    last_seen_age_s: float | None = None
    rssi: int | None = None
    battery_mv: int | None = None


class _Gateway(msgspec.Struct, kw_only=True):
    gateway: str
    state_age_s: float | None = None


class _Health(msgspec.Struct, kw_only=True):
    store: str
    now: float
    gateways: list[_Gateway]
    beacons: list[_Beacon]


def heard_from_health(body: bytes) -> list[Heard]:
    """The heard list from a health answer; :class:`msgspec` errors when it is not one."""
    h = msgspec.json.decode(body, type=_Health)
    report_age = {g.gateway: g.state_age_s or 0.0 for g in h.gateways}
    out: list[Heard] = []
    for b in h.beacons:
        if not b.reported or b.last_seen_age_s is None or b.rssi is None or b.heard_by is None:
            continue
        out.append(Heard(beacon=b.id, receiver=b.heard_by, rssi=max(-130, min(20, b.rssi)),
                         last_seen=h.now - b.last_seen_age_s - report_age.get(b.heard_by, 0.0),
                         battery_mv=(None if b.battery_mv is None
                                     else max(0, min(10_000, b.battery_mv)))))
    return out


def fetch_heard(hq: str, store: str, *, ca: str | None = None,
                timeout: float = 10.0) -> list[Heard]:
    token = os.environ.get(HQ_TOKEN_ENV)
    if not token:
        raise ConfigError(HQ_TOKEN_ENV, "is not set: HQ shows store health to signed-in staff only",
                          hint="export AISLECAST_HQ_TOKEN=$(aislecast hq tokens issue ...)")
    endpoint = f"{hq.rstrip('/')}/api/stores/{quote(store, safe='')}/health"
    req = urllib.request.Request(  # noqa: S310 - hq_request allows http(s) only
        endpoint, headers={"Authorization": f"Bearer {token}"})
    try:
        reply = hq_request(req, ca=hq_ca(ca), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ConfigError("--store", f"HQ knows no store {store!r} that this token may see",
                              hint="check the store id (GET /api/stores)") from exc
        raise ConfigError("--from-hq", f"HQ refused the health request ({exc.code})",
                          hint="use a token of an admin or of this store's staff") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AislecastError(f"HQ at {hq} was not reachable: {exc}",
                             hint="check --from-hq and the network") from exc
    try:
        return heard_from_health(reply.body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise AislecastError(f"HQ at {hq} answered something that is not store health",
                             hint="is --from-hq the HQ API's address?") from exc
