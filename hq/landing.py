"""Where a short link may send a shopper: the landing hosts configured in ``hq.toml``.

A short link printed on a shelf label is trusted by every shopper who scans it, so HQ
redirects only to hosts the retailer listed (``[links] landing_hosts``), checked when a
link is minted and again each time one is followed (a host taken off the list stops
its old links at once). The URL is parsed with :mod:`urllib.parse` and its host
compared exactly after one normalisation (lower case, no trailing dot, IDNA to ASCII).
What browsers read differently from urllib is refused outright: user info
(``https://bank.example@evil.example/`` goes to evil.example), backslashes (a browser
reads ``https://evil.example\\@bank.example/`` as evil.example), whitespace and control
characters. Only http and https. An entry ``host`` allows the scheme's default port
only; ``host:port`` allows that port::

    hosts = LandingHosts(["shop.example", "bücher.example", "promo.example:8443"])
    hosts.problem("https://SHOP.example./coffee")        # None: allowed
    hosts.problem("https://shop.example@evil.example/")  # 'carries user info ...'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from aislecast.kernel.counters import by

__all__ = ["LandingHosts", "LandingStats", "Refusal", "normalise_host"]

_DEFAULT_PORT: Final = {"http": 80, "https": 443}
_MAX_URL: Final = 2048  # what browsers and QR labels handle comfortably
_LDH: Final = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")


class Refusal(NamedTuple):
    code: str  # a metrics label: too_long, bad_characters, not_http, userinfo, bad_host, host_not_allowed
    message: str


@dataclass(slots=True)
class LandingStats:
    refused: dict[tuple[str, str], int] = by(("route", "reason"), (
        "short link landing URLs refused (mint: 422, follow: 410), per route and reason"))


def normalise_host(name: str) -> str:
    """``name`` as compared: lower case, no trailing dot, IDNA (punycode) ASCII; raises
    ValueError for a name that is not a valid host."""
    host = name.lower()
    host = host.removesuffix(".")
    try:
        ascii_host = host.encode("idna").decode("ascii") if host else ""
    except UnicodeError as exc:
        raise ValueError(f"{name!r} is not a valid domain name ({exc})") from None
    if not _LDH.fullmatch(ascii_host):
        raise ValueError(f"{name!r} is not a host name (letters, digits, '-' and dots)")
    return ascii_host


def _entry(text: str) -> tuple[str, int | None]:
    host, sep, port = text.strip().rpartition(":") if ":" in text else (text, "", "")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return normalise_host(host), int(port) if sep else None


class LandingHosts:
    """The allowed landing hosts; :meth:`problem` says why a URL is refused (or None)."""

    def __init__(self, hosts: Iterable[str]) -> None:
        """Raises ValueError naming the first entry that is not ``host`` or ``host:port``."""
        self.allowed = frozenset(_entry(h) for h in hosts)
        self.stats = LandingStats()

    def __repr__(self) -> str:
        return f"LandingHosts({self.names()})"

    def names(self) -> list[str]:
        return sorted(h if p is None else f"{h}:{p}" for h, p in self.allowed)

    def problem(self, url: str) -> Refusal | None:
        """Why ``url`` may not be a landing page, or None when it may."""
        if len(url) > _MAX_URL:
            return Refusal("too_long", f"is longer than {_MAX_URL} characters")
        if "\\" in url or any(c <= " " or c == "\x7f" for c in url):
            return Refusal("bad_characters", "contains a backslash, whitespace or a control character")
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORT:
            return Refusal("not_http", "is not an http(s) URL")
        if "@" in parts.netloc:
            return Refusal("userinfo", "carries user info (user@host), which hides the real host")
        try:
            port = parts.port
            host = normalise_host(parts.hostname or "")
        except ValueError as exc:
            return Refusal("bad_host", f"has an invalid host or port: {exc}")
        if port == _DEFAULT_PORT[parts.scheme]:
            port = None
        if (host, port) in self.allowed:
            return None
        shown = host if port is None else f"{host}:{port}"
        allowed = ", ".join(self.names()) or "none configured"
        return Refusal("host_not_allowed",
                       f"host {shown!r} is not a configured landing host ({allowed})")

    def refuse(self, route: str, url: str) -> Refusal | None:
        """:meth:`problem`, counted per route and reason when there is one."""
        refusal = self.problem(url)
        if refusal is not None:
            key = (route, refusal.code)
            self.stats.refused[key] = self.stats.refused.get(key, 0) + 1
        return refusal
