"""QR codes for shelf labels: one code as PNG or SVG, or A4 label sheets as PDF or SVG.

A label's QR code carries the same short link as the shelf's NFC tag,
``https://HQ/s/CODE`` (plus ``?src=qr``, where the tag has ``?src=nfc``), so HQ counts
both calls to action through one endpoint (:mod:`hq.shortlinks`). The module matrix
comes from the ``qrcode`` package; drawing is ours (Pillow for PNG/PDF, plain XML for
SVG) so codes, captions and sheets share one layout.

With HQ's address, :func:`mint_link` asks ``POST /api/shortlinks`` for the short link of
a (landing URL, tag, store): HQ mints it once and returns the same code every later
time, so a tag's QR label and NFC tag, written on different days, carry one link.
"""

from __future__ import annotations

import csv
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import msgspec
import qrcode
import qrcode.constants
import qrcode.exceptions
from PIL import Image, ImageDraw, ImageFont

from aislecast.kernel.errors import AislecastError, ConfigError
from aislecast.kernel.httpclient import hq_ca, hq_request
from aislecast.kernel.shortlinks import is_valid_code, short_url

__all__ = [
    "EC_LEVELS",
    "HQ_TOKEN_ENV",
    "Label",
    "MintedLink",
    "mint_labels",
    "mint_link",
    "qr_matrix",
    "read_labels",
    "write_qr",
    "write_sheet",
]

Matrix = list[list[bool]]

# Where minting finds the staff member's HQ token (an environment variable keeps it out
# of shell history and of other users' `ps`).
HQ_TOKEN_ENV: Final = "AISLECAST_HQ_TOKEN"  # noqa: S105 - the variable's name

# L/M/Q/H restore 7/15/25/30 % of damaged modules. M is the usual default for printed
# labels; H suits labels on freezer doors or where scuffing is likely.
EC_LEVELS: Final[dict[str, int]] = {
    "L": qrcode.constants.ERROR_CORRECT_L, "M": qrcode.constants.ERROR_CORRECT_M,
    "Q": qrcode.constants.ERROR_CORRECT_Q, "H": qrcode.constants.ERROR_CORRECT_H,
}
# The QR spec's quiet zone is 4 modules; less makes some phone decoders miss the code.
QUIET_MODULES: Final = 4
# A4 in millimetres, with 10 mm margins that every office printer can reach.
_PAGE_W_MM: Final = 210.0
_PAGE_H_MM: Final = 297.0
_MARGIN_MM: Final = 10.0
# 3 x 5 labels of 63 x 55 mm: a 30 mm code (about 0.8 mm a module for a version 3 code
# with its quiet zone) scans from a phone at 20-40 cm, and four 3 mm caption lines fit.
_COLUMNS: Final = 3
_ROWS: Final = 5
_QR_MM: Final = 30.0
_CAPTION_MM: Final = 3.0
# 300 dpi renders a 0.8 mm module as ~9 pixels: crisp on laser and inkjet alike.
_PDF_DPI: Final = 300


@dataclass(frozen=True, slots=True)
class Label:
    """One shelf label: what the QR code carries and the caption printed under it."""

    tag_id: str
    url: str
    zone: str = ""
    product: str = ""

    @property
    def caption(self) -> list[str]:
        short = self.url.split("://", 1)[-1].split("?", 1)[0]
        return [self.tag_id, self.zone, self.product, short]


def qr_matrix(data: str, *, ec: str = "M") -> Matrix:
    """The QR module matrix for ``data`` (True is dark), without quiet zone."""
    if ec not in EC_LEVELS:
        raise ConfigError("error_correction", f"unknown level {ec!r}",
                          hint="use one of L, M, Q, H")
    if not data:
        raise ConfigError("url", "nothing to encode", hint="give a URL such as https://...")
    code = qrcode.QRCode(error_correction=EC_LEVELS[ec], border=0)
    try:
        code.add_data(data)
        code.make(fit=True)
    except (qrcode.exceptions.DataOverflowError, ValueError) as exc:
        raise ConfigError("url", f"too long for a QR code at level {ec} ({len(data)} chars)",
                          hint="use a short link (https://HQ/s/CODE) or a lower level") from exc
    return [[bool(m) for m in row] for row in code.get_matrix()]


def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size_px, 6))


def _fit(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 1)] + "\u2026"


def _draw_qr(draw: ImageDraw.ImageDraw, m: Matrix, x0: int, y0: int, box: float) -> None:
    for y, row in enumerate(m):
        for x, dark in enumerate(row):
            if dark:
                left, top = round(x0 + x * box), round(y0 + y * box)
                right, bottom = round(x0 + (x + 1) * box), round(y0 + (y + 1) * box)
                draw.rectangle((left, top, right - 1, bottom - 1), fill=0)


def _png(m: Matrix, path: Path, *, size_px: int, border: int, caption: str | None) -> None:
    modules = len(m) + 2 * border
    box = max(1, size_px // modules)  # whole pixels per module: no blurred edges
    side = box * modules
    font_px = max(10, side // 18)
    text_h = 0 if not caption else round(font_px * 1.6)
    img = Image.new("L", (side, side + text_h), 255)
    draw = ImageDraw.Draw(img)
    _draw_qr(draw, m, border * box, border * box, box)
    if caption:
        font = _font(font_px)
        text = caption[:200]  # no label is wider than this; bounds the fitting loop
        while len(text) > 1 and draw.textlength(text, font=font) > side - 2 * box:
            text = text[:-2] + "\u2026"
        draw.text((side / 2, side + text_h / 2 - box), text, fill=0, font=font, anchor="mm")
    img.convert("1", dither=Image.Dither.NONE).save(path, format="PNG", dpi=(300, 300))


def _svg_path(m: Matrix, x0: float, y0: float, box: float) -> str:
    """One path of horizontal runs: far smaller than a rect per module."""
    parts: list[str] = []
    for y, row in enumerate(m):
        x = 0
        while x < len(row):
            if row[x]:
                run = x
                while run < len(row) and row[run]:
                    run += 1
                parts.append(f"M{x0 + x * box:.3f} {y0 + y * box:.3f}h{(run - x) * box:.3f}"
                             f"v{box:.3f}h{-(run - x) * box:.3f}z")
                x = run
            else:
                x += 1
    return f'<path fill="#000" d="{"".join(parts)}"/>'


def _svg(m: Matrix, path: Path, *, size_px: int, border: int, caption: str | None) -> None:
    side = len(m) + 2 * border
    text_h = 0 if not caption else 3
    body = [_svg_path(m, border, border, 1.0)]
    if caption:
        body.append(f'<text x="{side / 2:g}" y="{side + 1:g}" font-size="1.6" '
                    f'font-family="sans-serif" text-anchor="middle">'
                    f"{escape(_fit(caption, int(side / 0.9)))}</text>")
    height = size_px * (side + text_h) / side
    _write_svg(path, f"{size_px}px", f"{height:.0f}px", f"0 0 {side} {side + text_h}", body)


def _write_svg(path: Path, width: str, height: str, view: str, body: Sequence[str]) -> None:
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"'
            f' width="{width}" height="{height}" viewBox="{view}" shape-rendering="crispEdges">'
            f'\n<rect width="100%" height="100%" fill="#fff"/>\n' + "\n".join(body)
            + "\n</svg>\n")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError("output", f"cannot write {path}: {exc.strerror}",
                          hint="check the directory exists and is writable") from exc


def write_qr(
    url: str, path: Path, *, size_px: int = 400, ec: str = "M", border: int = QUIET_MODULES,
    caption: str | None = None,
) -> Matrix:
    """Write ``url`` as a QR code to ``path`` (``.png`` or ``.svg``); return the matrix."""
    suffix = path.suffix.lower()
    if suffix not in {".png", ".svg"}:
        raise ConfigError("output", f"{path}: unknown image type {suffix!r}",
                          hint="name the output .png or .svg")
    if not 32 <= size_px <= 10_000:
        raise ConfigError("size", f"{size_px} px is out of range", hint="use 32..10000")
    if not 0 <= border <= 20:
        raise ConfigError("border", f"{border} modules is out of range",
                          hint=f"use {QUIET_MODULES} (the QR spec's quiet zone)")
    m = qr_matrix(url, ec=ec)
    if suffix == ".png":
        try:
            _png(m, path, size_px=size_px, border=border, caption=caption)
        except OSError as exc:
            raise ConfigError("output", f"cannot write {path}: {exc}",
                              hint="check the directory exists and is writable") from exc
    else:
        _svg(m, path, size_px=size_px, border=border, caption=caption)
    return m


def read_labels(
    path: Path, *, base_url: str | None = None, tag_source: bool = True
) -> list[Label]:
    """Labels from a CSV with ``tag_id``, ``url`` or ``code``, optional ``zone``/``product``.

    A ``code`` column becomes ``BASE_URL/s/CODE?src=qr`` (without ``?src=qr`` when
    ``tag_source`` is false); a ``url`` is used verbatim.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or [])
            rows = list(reader)
    except OSError as exc:
        raise ConfigError("sheet", f"cannot read {path}: {exc.strerror}",
                          hint="check the path") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError("sheet", f"{path} is not a UTF-8 CSV file: {exc}",
                          hint="export the sheet as CSV UTF-8") from exc
    if "tag_id" not in columns or not columns & {"url", "code"}:
        raise ConfigError("sheet", f"{path}: header has {sorted(columns)}",
                          hint="the first line needs tag_id and url or code, e.g. "
                          "tag_id,zone,product,code")
    if "url" not in columns and not base_url:
        raise ConfigError("base_url", "a code column needs the HQ address",
                          hint="pass --base-url https://hq.example.com")
    labels: list[Label] = []
    for line, row in enumerate(rows, start=2):
        tag = (row.get("tag_id") or "").strip()
        url = (row.get("url") or "").strip()
        code = (row.get("code") or "").strip()
        if not tag:
            raise ConfigError(f"{path.name}:{line}: tag_id", "is empty", hint="fill it in")
        if not url:
            if not code or not is_valid_code(code) or not base_url:
                raise ConfigError(f"{path.name}:{line}: code", f"{code!r} is not a short code",
                                  hint="give 4-16 letters and digits, or a url column")
            url = short_url(base_url, code, source="qr" if tag_source else None)
        labels.append(Label(tag, url, (row.get("zone") or "").strip(),
                            (row.get("product") or "").strip()))
    if not labels:
        raise ConfigError("sheet", f"{path} has no labels", hint="add one row per tag")
    return labels


def _cells() -> list[tuple[float, float]]:
    cw = (_PAGE_W_MM - 2 * _MARGIN_MM) / _COLUMNS
    ch = (_PAGE_H_MM - 2 * _MARGIN_MM) / _ROWS
    return [(_MARGIN_MM + c * cw, _MARGIN_MM + r * ch) for r in range(_ROWS)
            for c in range(_COLUMNS)]


def _max_chars() -> int:
    # Sans-serif glyphs average ~0.55 em; keep 4 mm clear of the next label.
    cw = (_PAGE_W_MM - 2 * _MARGIN_MM) / _COLUMNS
    return int((cw - 4) / (0.55 * _CAPTION_MM))


def _sheet_svg(labels: Sequence[Label]) -> list[str]:
    cw = (_PAGE_W_MM - 2 * _MARGIN_MM) / _COLUMNS
    body: list[str] = []
    for label, (x, y) in zip(labels, _cells(), strict=False):
        m = qr_matrix(label.url)
        box = _QR_MM / (len(m) + 2 * QUIET_MODULES)
        qx = x + (cw - _QR_MM) / 2 + QUIET_MODULES * box
        body.append(_svg_path(m, qx, y + QUIET_MODULES * box, box))
        for i, line in enumerate(label.caption):
            weight = ' font-weight="bold"' if i == 0 else ""
            body.append(
                f'<text x="{x + cw / 2:.2f}" y="{y + _QR_MM + 3.5 + i * _CAPTION_MM:.2f}" '
                f'font-size="{_CAPTION_MM * 0.85:.2f}" font-family="sans-serif"{weight} '
                f'text-anchor="middle">{escape(_fit(line, _max_chars()))}</text>'
            )
    return body


def _sheet_image(labels: Sequence[Label]) -> Image.Image:
    px = _PDF_DPI / 25.4
    img = Image.new("L", (round(_PAGE_W_MM * px), round(_PAGE_H_MM * px)), 255)
    draw = ImageDraw.Draw(img)
    font = _font(round(_CAPTION_MM * 0.85 * px))
    cw = (_PAGE_W_MM - 2 * _MARGIN_MM) / _COLUMNS
    for label, (x, y) in zip(labels, _cells(), strict=False):
        m = qr_matrix(label.url)
        box = _QR_MM * px / (len(m) + 2 * QUIET_MODULES)
        qx = (x + (cw - _QR_MM) / 2) * px + QUIET_MODULES * box
        _draw_qr(draw, m, round(qx), round(y * px + QUIET_MODULES * box), box)
        for i, line in enumerate(label.caption):
            draw.text(((x + cw / 2) * px, (y + _QR_MM + 3.5 + i * _CAPTION_MM) * px),
                      _fit(line, _max_chars()), fill=0, font=font, anchor="ms")
    return img.convert("1", dither=Image.Dither.NONE)


def write_sheet(labels: Sequence[Label], path: Path) -> list[Path]:
    """Print ``labels`` on A4 pages; PDF gets every page, SVG one file per page.

    SVG has no pages, so page 2 onwards go to ``NAME-2.svg``, ``NAME-3.svg``, ...
    Returns the files written.
    """
    suffix = path.suffix.lower()
    if suffix not in {".pdf", ".svg"}:
        raise ConfigError("output", f"{path}: unknown sheet type {suffix!r}",
                          hint="name the output .pdf or .svg")
    per_page = _COLUMNS * _ROWS
    pages = [labels[i : i + per_page] for i in range(0, len(labels), per_page)]
    if suffix == ".pdf":
        images = [_sheet_image(p) for p in pages]
        try:
            images[0].save(path, format="PDF", save_all=True, append_images=images[1:],
                           resolution=float(_PDF_DPI), title="aislecast shelf labels")
        except OSError as exc:
            raise ConfigError("output", f"cannot write {path}: {exc}",
                              hint="check the directory exists and is writable") from exc
        return [path]
    written: list[Path] = []
    for n, page in enumerate(pages, start=1):
        out = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        _write_svg(out, f"{_PAGE_W_MM:g}mm", f"{_PAGE_H_MM:g}mm",
                   f"0 0 {_PAGE_W_MM:g} {_PAGE_H_MM:g}", _sheet_svg(page))
        written.append(out)
    return written



@dataclass(frozen=True, slots=True)
class MintedLink:
    """HQ's answer to ``POST /api/shortlinks``: the code and its QR and NFC forms."""

    code: str
    short: str  # https://HQ/s/CODE
    qr: str  # ...?src=qr&t=TAG
    nfc: str  # ...?src=nfc&t=TAG
    created: bool  # False: an existing link was reused


def mint_link(hq: str, url: str, *, tag: str | None = None, store: str | None = None,
              campaign: str | None = None, timeout: float = 10.0,
              token: str | None = None, ca: str | None = None) -> MintedLink:
    """The short link HQ keeps for ``url`` and this tag/store/campaign, minted or reused.

    ``token`` (default: the ``AISLECAST_HQ_TOKEN`` environment variable, which keeps it
    out of shell history and ``ps``) is a store staff member's personal token
    (``aislecast hq tokens issue --kind personal --user NAME``). An https ``hq`` is
    verified against ``ca`` (default: ``AISLECAST_HQ_CA``, else the system's trust store)."""
    token = token if token is not None else os.environ.get(HQ_TOKEN_ENV)
    if not token:
        raise ConfigError(HQ_TOKEN_ENV, "is not set: HQ mints short links for signed-in staff only",
                          hint="export AISLECAST_HQ_TOKEN=$(aislecast hq tokens issue --kind "
                               "personal --user YOU --json | jq -r .token)")
    endpoint = hq.rstrip("/") + "/api/shortlinks"
    if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
        raise ConfigError("hq", f"not an http(s) address: {hq!r}",
                          hint="give HQ's address, e.g. https://hq.example.com")
    fields = {"url": url, "tag": tag, "store": store, "campaign": campaign}
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        endpoint, data=msgspec.json.encode({k: v for k, v in fields.items() if v is not None}),
        method="POST", headers={"Content-Type": "application/json",
                                "Authorization": f"Bearer {token}"})
    try:
        reply = hq_request(req, ca=hq_ca(ca), timeout=timeout)
        status, raw = reply.status, reply.body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise ConfigError("hq", f"HQ refused the short link ({exc.code}): {detail}",
                          hint="check the landing URL (http/https), the tag id, and that "
                               f"{HQ_TOKEN_ENV} is a live token for this store") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AislecastError(f"cannot reach HQ at {hq}: {exc}",
                             hint="check --hq and that `aislecast hq serve` runs") from exc
    try:
        data = msgspec.json.decode(raw, type=dict[str, str | None])
        return MintedLink(code=str(data["code"]), short=str(data["short"]), qr=str(data["qr"]),
                          nfc=str(data["nfc"]), created=status == 201)
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
        raise AislecastError(f"HQ at {hq} answered something that is not a short link",
                             hint="is --hq the HQ API's address?") from exc


def mint_labels(labels: Sequence[Label], hq: str, *, store: str | None = None,
                ca: str | None = None) -> list[Label]:
    """Each label's ``url`` (its landing page) replaced by the QR form of its tag's short
    link at HQ, minted on first use and the same code on every later run."""
    return [Label(lb.tag_id, mint_link(hq, lb.url, tag=lb.tag_id, store=store, ca=ca).qr, lb.zone,
                  lb.product) for lb in labels]
