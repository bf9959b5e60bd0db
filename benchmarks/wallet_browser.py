"""The web wallet in a real browser (Debian's chromium driven by Playwright), for
``aislecast bench wallet`` and tests/test_wallet.py.

Chromium must accept the broker's WebSockets certificate, which HQ's private CA signed:
:func:`chromium_args` pins that one certificate's public key with
``--ignore-certificate-errors-spki-list`` (every other certificate is checked as usual),
so the page reaches the broker over the real ``wss://`` path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aislecast.kernel.errors import AislecastError

__all__ = ["CHROMIUM", "PHONE_VIEWPORT", "chromium_args", "enrol", "online", "wallet_browser"]

CHROMIUM: Final = os.environ.get("AISLECAST_CHROMIUM", "/usr/bin/chromium")
PHONE_VIEWPORT: Final = (390, 844)
_ARGS: Final = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_args(broker_cert: Path) -> list[str]:
    """Flags that make chromium accept ``broker_cert`` (PEM) and no other unknown one."""
    cert = x509.load_pem_x509_certificate(broker_cert.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return [*_ARGS, f"--ignore-certificate-errors-spki-list={pin}"]


@contextlib.asynccontextmanager
async def wallet_browser(profile: Path, args: Sequence[str]) -> AsyncIterator[Any]:
    """A phone-sized page in a fresh chromium profile (``--user-data-dir``: localStorage
    survives closing a page, as on a phone)."""
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        raise AislecastError(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 - a dev extra
    except ImportError:
        raise AislecastError("playwright is not installed (pip install -e '.[dev]')") from None
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=list(args),
            viewport={"width": PHONE_VIEWPORT[0], "height": PHONE_VIEWPORT[1]}, is_mobile=True,
            has_touch=True, accept_downloads=True)
        try:
            yield ctx.pages[0] if ctx.pages else await ctx.new_page()
        finally:
            await ctx.close()


async def enrol(page: Any, base: str, *, stores: Sequence[str] = (),
                purposes: Sequence[str] = ()) -> dict[str, Any]:
    """Join in the wallet at ``base``/wallet/ and wait until it is online; its enrolment."""
    await page.goto(f"{base}/wallet/")
    await page.locator("#join").wait_for(state="visible", timeout=15_000)
    for p in purposes:
        await page.locator(f'input[name="purpose"][value="{p}"]').check()
    for s in stores:
        await page.locator(f'input[name="store"][value="{s}"]').check()
    await page.locator("#join").click()
    await online(page)
    enrolment: dict[str, Any] = await page.evaluate("aislecastWallet.state().enrolment")
    return enrolment


async def online(page: Any, timeout_ms: float = 20_000) -> None:
    """Until the wallet says it is online (connected and subscribed)."""
    await page.locator('#status[data-state="online"]').wait_for(timeout=timeout_ms)
