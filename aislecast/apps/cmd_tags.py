"""``aislecast tags read|write``: staff tools for shelf NFC tags (docs/architecture.md#staff-tools)."""

from __future__ import annotations

import argparse
import sys
import textwrap

import msgspec

from firmware_config.qr import mint_link
from firmware_config.tag_registry import register_tag
from firmware_config.tags import TagReport, build_message, read_tag, write_tag

__all__ = ["register"]

_HELP = textwrap.dedent(
    """\
    Read and write the store's shelf NFC tags. DEV is an nfcpy device path:
    usb (first USB reader), usb:VID:PID (e.g. usb:054c:06c3), tty:USB0:pn532, or
    udp:127.0.0.1:PORT for an emulated tag.

    examples:
      aislecast tags read --device usb
      aislecast tags read --device usb --json
      aislecast tags write --device usb --tag-id T-0417 \\
          --url https://hq.example/s/Ab3x --title "Fresh milk offers" \\
          --zone dairy --product milk-1l
    """
)
_READ_HELP = textwrap.dedent(
    """\
    Wait for a tag on the reader and print its type, uid, NDEF capacity and records
    (URI, Smart Poster, Text and our aislecast.io:tag record).

    examples:
      $ aislecast tags read --device usb
      Type2Tag uid=04a2245a8c5c80 capacity=137 used=79 writeable=yes
        smartposter uri=https://hq.example/s/Ab3x?src=nfc&t=T-0417 title=Fresh milk offers
        aislecast tag_id=T-0417 zone=dairy product=milk-1l
      $ aislecast tags read --device udp:127.0.0.1:24680 --json
    """
)
_WRITE_HELP = textwrap.dedent(
    """\
    Write a shelf tag: the HQ short link with src=nfc and the tag id added
    (https://HQ/s/CODE?src=nfc&t=ID), as a Smart Poster when --title is given, plus the
    aislecast.io:tag record (id, zone, product). The tag is read back and verified.
    A read-only tag, or one too small for the message, is refused before writing, and
    the message says how many bytes are needed.

    examples:
      $ aislecast tags write --device usb --tag-id T-0417 --url https://hq.example/s/Ab3x
      wrote Type2Tag 04a2245a8c5c80: 52 of 137 bytes, verified in 41 ms
      $ aislecast tags write --device usb --tag-id T-0417 --url https://hq.example/s/Ab3x \\
            --title "Fresh milk offers" --zone dairy --product milk-1l --timeout 30
      $ aislecast tags write --device usb --tag-id T-0417 --store s042 \\
            --hq https://hq.example --url https://shop.example/milk

    With --hq, --url is the landing page: HQ mints the tag's short link (or returns
    the one it has, e.g. from `aislecast qr --hq`) and the tag carries it with src=nfc.
    With --hq and --store, the written tag is registered at HQ (store, zone, product,
    short link, when and by whom: GET /api/stores/STORE/tags); the store and zone must
    exist there.
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("tags", help="read and write shelf NFC tags", description=_HELP,
                       formatter_class=fmt)
    tags = p.add_subparsers(dest="tags_command", metavar="ACTION", required=True)

    r = tags.add_parser("read", help="print a tag's type, uid and NDEF records",
                        description=_READ_HELP, formatter_class=fmt)
    r.add_argument("--device", required=True, metavar="DEV", help="nfcpy device path")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for a tag (default: 10)")
    r.set_defaults(func=_read)

    w = tags.add_parser("write", help="write and verify a shelf tag", description=_WRITE_HELP,
                        formatter_class=fmt)
    w.add_argument("--device", required=True, metavar="DEV", help="nfcpy device path")
    w.add_argument("--tag-id", required=True, metavar="ID", help="the tag's id in HQ")
    w.add_argument("--url", required=True, help="HQ short link, e.g. https://hq.example/s/CODE;"
                   " with --hq the landing page to shorten")
    w.add_argument("--hq", metavar="URL",
                   help="mint (or reuse) the short link for --url at this HQ, as the "
                        "staff token in $AISLECAST_HQ_TOKEN")
    w.add_argument("--hq-ca", metavar="FILE",
                   help="the CA HQ's HTTPS certificate must verify against (default: "
                        "$AISLECAST_HQ_CA, else the system's trust store)")
    w.add_argument("--store", metavar="ID", help="store of the tag (with --hq)")
    w.add_argument("--title", help="Smart Poster title shown by phones")
    w.add_argument("--zone", help="zone id the tag sits in")
    w.add_argument("--product", help="product id (SKU) on that shelf")
    w.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for a tag (default: 10)")
    w.add_argument("--json", action="store_true", help="print one JSON object")
    w.set_defaults(func=_write)


def _records_text(records: list[dict[str, str | int]]) -> list[str]:
    lines = []
    for rec in records:
        fields = " ".join(f"{k}={v}" for k, v in rec.items() if k != "type")
        lines.append(f"  {rec['type']} {fields}".rstrip())
    return lines


def _show(report: TagReport, *, as_json: bool, head: str) -> int:
    """``report`` as one JSON line, or ``head`` and its records one a line."""
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
        return 0
    print(head)
    for line in _records_text(report.records):
        print(line)
    return 0


def _read(args: argparse.Namespace) -> int:

    report = read_tag(args.device, timeout=args.timeout)
    return _show(report, as_json=args.json, head=(
        f"{report.tag_type} uid={report.uid} capacity={report.capacity} "
        f"used={report.length} writeable={'yes' if report.writeable else 'no'}"))


def _write(args: argparse.Namespace) -> int:

    url, code = args.url, None
    if args.hq is not None:

        link = mint_link(args.hq, args.url, tag=args.tag_id, store=args.store, ca=args.hq_ca)
        print(f"{'minted' if link.created else 'reused'} {link.short} for tag {args.tag_id}",
              file=sys.stderr)
        url, code = link.nfc, link.code
    try:
        message = build_message(tag_id=args.tag_id, url=url, title=args.title,
                                zone=args.zone, product=args.product)
    except ValueError as exc:
        print(f"aislecast: error: {exc}", file=sys.stderr)
        return 2
    report = write_tag(args.device, message, timeout=args.timeout)
    if args.hq is not None and args.store is not None:  # HQ's tag registry: where, what, who
        register_tag(args.hq, args.store, args.tag_id, url=url, code=code, zone=args.zone,
                     product=args.product, ca=args.hq_ca)
        print(f"registered tag {args.tag_id} at HQ for store {args.store}", file=sys.stderr)
    return _show(report, as_json=args.json, head=(
        f"wrote {report.tag_type} {report.uid}: {report.length} of {report.capacity} bytes, "
        f"verified in {report.elapsed_ms:.0f} ms"))
