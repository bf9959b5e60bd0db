"""Calls to HQ's HTTP API from the command-line tools, verified when HQ serves HTTPS.

An ``https://`` address is verified against the CA file the user names (``--hq-ca``, or
the ``AISLECAST_HQ_CA`` environment variable: HQ's private CA, ``DATA_DIR/ca/ca.crt``)
or, without one, the system's trust store; there is no way to turn verification off.
A certificate that does not verify is a :class:`HqCertificateError` saying which CA was
used and how to give the right one.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from aislecast.kernel.errors import AislecastError, ConfigError

__all__ = ["HQ_CA_ENV", "HqCertificateError", "HqReply", "hq_ca", "hq_request", "hq_tls_context"]

HQ_CA_ENV: Final = "AISLECAST_HQ_CA"


class HqCertificateError(AislecastError):
    """HQ's HTTPS certificate did not verify against ``ca`` (None: the system's store)."""

    def __init__(self, url: str, ca: str | None, reason: str) -> None:
        against = f"the CA in {ca}" if ca else "the system's trust store"
        super().__init__(f"HQ at {url} has a certificate that does not verify against "
                         f"{against}: {reason}",
                         hint=f"give HQ's CA with --hq-ca FILE or {HQ_CA_ENV}=FILE "
                              "(DATA_DIR/ca/ca.crt on HQ's host)")
        self.url = url
        self.ca = ca


@dataclass(frozen=True, slots=True)
class HqReply:
    status: int
    body: bytes


def hq_ca(flag: str | None) -> str | None:
    """The CA file for HQ: the flag's, else ``$AISLECAST_HQ_CA``, else None (system store)."""
    return flag or os.environ.get(HQ_CA_ENV) or None


def hq_tls_context(url: str, ca: str | None) -> ssl.SSLContext | None:
    """A verifying context for an https ``url`` (None for http); ConfigError if ``ca``
    cannot be read."""
    if urlsplit(url).scheme != "https":
        return None
    if ca is None:
        return ssl.create_default_context()
    if not Path(ca).is_file():
        raise ConfigError("--hq-ca", f"file {ca} not found",
                          hint="copy HQ's CA certificate (DATA_DIR/ca/ca.crt) here")
    try:
        return ssl.create_default_context(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError("--hq-ca", f"{ca} is not a PEM CA certificate ({exc.reason})",
                          hint="give HQ's ca.crt (PEM)") from None


def hq_request(req: urllib.request.Request, *, ca: str | None, timeout: float) -> HqReply:
    """Send ``req`` (http or https only) and read the reply; an HTTP error status raises
    ``urllib.error.HTTPError`` as urllib does, a certificate that does not verify
    :class:`HqCertificateError`, anything else unreachable ``urllib.error.URLError``."""
    url = req.full_url
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError("--hq", f"not an http(s) address: {url!r}",
                          hint="give HQ's address, e.g. https://hq.example.com")
    ctx = hq_tls_context(url, ca)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310 - scheme checked
            return HqReply(int(resp.status), resp.read())
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise HqCertificateError(url, ca, exc.reason.verify_message
                                     or str(exc.reason)) from exc
        raise
