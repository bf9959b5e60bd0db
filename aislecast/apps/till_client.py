"""The reference till client: HQ's till API over HTTP with a till token.

Used by ``aislecast till`` (:mod:`aislecast.apps.cmd_till`) and the till simulator
(:mod:`aislecast.apps.till_sim`). A refusal by HQ is a :class:`TillRefusal` carrying
HQ's stable ``reason`` (``forged``, ``expired``, ``used``, ``foreign_store``,
``unknown_till``, ``too_many_lines``, ...); HQ unreachable is an
:class:`~aislecast.kernel.errors.AislecastError`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from aislecast.kernel.errors import AislecastError, ConfigError
from aislecast.kernel.httpclient import hq_request

__all__ = ["TILL_TOKEN_ENV", "TillClient", "TillRefusal", "parse_line"]

TILL_TOKEN_ENV: Final = "AISLECAST_TILL_TOKEN"  # noqa: S105 - the variable's name


class TillRefusal(AislecastError):
    """HQ refused the call: ``status``, ``reason`` and HQ's ``detail``."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"refused ({reason}): {detail}")
        self.status, self.reason, self.detail = status, reason, detail


def parse_line(text: str) -> dict[str, Any]:
    """``PRODUCT:CATEGORY:QTY:VALUE`` (value in cents; product or category may be empty)
    as a basket line; ConfigError naming ``--line`` when it is not."""
    parts = text.split(":")
    if len(parts) != 4:
        raise ConfigError("--line", f"{text[:80]!r} is not PRODUCT:CATEGORY:QTY:VALUE",
                          hint="e.g. --line milk-1l:dairy:2:258 (value in cents)")
    product, category, qty, value = parts
    if not product and not category:
        raise ConfigError("--line", f"{text[:80]!r} names neither product nor category")
    try:
        quantity, cents = int(qty), int(value)
    except ValueError:
        raise ConfigError("--line", f"{text[:80]!r}: quantity and value must be whole numbers",
                          hint="the value is in cents: 2.58 is 258") from None
    line: dict[str, Any] = {"quantity": quantity, "value_cents": cents}
    if product:
        line["product"] = product
    if category:
        line["category"] = category
    return line


@dataclass(frozen=True, slots=True)
class TillClient:
    hq: str  # HQ's base address, http(s)://host:port
    token: str
    ca: str | None = None
    timeout: float = 10.0

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(  # noqa: S310 - hq_request checks the scheme
            self.hq.rstrip("/") + path, data=msgspec.json.encode(body), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            reply = hq_request(req, ca=self.ca, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                got = msgspec.json.decode(raw, type=dict[str, Any])
            except msgspec.DecodeError:
                got = {}
            detail = got.get("detail", raw.decode("utf-8", "replace")[:200])
            reason = str(got.get("reason", "http_error"))
            raise TillRefusal(exc.code, reason, " ".join(str(detail).split())[:300]) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AislecastError(f"cannot reach HQ at {self.hq}: {exc}",
                                 hint="check --hq and that `aislecast hq serve` runs") from None
        try:
            return msgspec.json.decode(reply.body, type=dict[str, Any])
        except msgspec.DecodeError:
            raise AislecastError(f"HQ at {self.hq} answered something that is not JSON",
                                 hint="is --hq the HQ API's address?") from None

    def redeem(self, code: str, txn: str, *, store: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code, "txn": txn}
        if store is not None:
            body["store"] = store
        return self._post("/api/till/redeem", body)

    def purchase(self, txn: str, lines: list[dict[str, Any]], *, member: str | None = None,
                 ts: float | None = None, store: str | None = None) -> dict[str, Any]:
        extra = {"member": member, "ts": ts, "store": store}
        body = {"txn": txn, "lines": lines} | {k: v for k, v in extra.items() if v is not None}
        return self._post("/api/till/purchases", body)
