"""Store staff tools: ``aislecast qr`` and ``aislecast beacons plan|check``."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import msgspec

from aislecast.kernel.errors import ConfigError
from firmware_config import check as chk
from firmware_config.floorplan import load_floorplan
from firmware_config.hq_heard import fetch_heard
from firmware_config.plan import load_plan, make_plan, plan_to_csv, plan_to_json
from firmware_config.qr import (
    mint_labels,
    mint_link,
    read_labels,
    write_qr,
    write_sheet,
)

__all__ = ["register"]

_QR_HELP = textwrap.dedent(
    """\
    Make a QR code (PNG or SVG, by the output's extension) or a sheet of shelf labels
    (PDF or SVG on A4, 15 labels a page, as many pages as needed).

    Labels carry the same short link as the shelf's NFC tag, with ?src=qr, so HQ
    counts QR scans and NFC taps through one endpoint.

    examples:
      aislecast qr --url https://hq.example.com/s/Ab3dE9z?src=qr -o label.png
      aislecast qr --url https://hq.example.com/s/Ab3dE9z?src=qr -o label.svg \\
          --size 600 --error-correction H --caption "Coffee - aisle 3"
      aislecast qr --sheet tags.csv --base-url https://hq.example.com -o sheet.pdf
      aislecast qr --sheet tags.csv --base-url https://hq.example.com -o sheet.svg
      aislecast qr --hq https://hq.example.com --tag-id T-0007 --store s042 \\
          --url https://shop.example/coffee -o label.png
      aislecast qr --hq https://hq.example.com --store s042 --sheet tags.csv -o sheet.pdf

    With --hq, --url (or the CSV's url column) is the landing page: HQ mints the
    tag's short link (POST /api/shortlinks) or returns the one it already has, and
    the code carries https://HQ/s/CODE?src=qr&t=TAG, the same link
    `aislecast tags write --hq` puts on the NFC tag with src=nfc.

    tags.csv has a header line; tag_id and url or code are required, zone and
    product are printed when present:
      tag_id,zone,product,code
      T-0007,aisle-3,Arabica coffee 1 kg,Ab3dE9z
    A sheet of more than one page in SVG is written as sheet.svg, sheet-2.svg, ...
    """
)

_PLAN_HELP = textwrap.dedent(
    """\
    Turn a floor plan (JSON or TOML: store, zones with kind and size in metres,
    optional receivers and radio model) into a beacon placement plan: how many
    beacons per zone and where, tx power and advertising interval from a
    log-distance path-loss model, and each beacon's iBeacon UUID/major/minor and
    Eddystone-UID namespace/instance.

    examples:
      aislecast beacons plan --floorplan examples/store-floorplan.json
      aislecast beacons plan --floorplan store.toml --format csv > beacons.csv
      aislecast beacons plan --floorplan store.json -o plans/s042   # JSON and CSV

    Tune the radio in the floor plan's "radio" table: path_loss_exponent (2.5),
    measured_power_dbm at 1 m for 0 dBm (-59), edge_rssi_dbm (-82) and
    area_per_beacon_m2 (49).
    """
)

_CHECK_HELP = textwrap.dedent(
    """\
    Compare a placement plan with what the gateways hear, and report beacons that
    are missing, weak (well below the plan's predicted RSSI), in the wrong zone
    (heard strongest by another zone's receiver) or low on battery, plus beacons of
    this store that are not in the plan.

    HEARD is a JSON list, one object per beacon and receiver:
      [{"beacon": "aisle-3-b2", "receiver": "gw-back", "rssi": -63,
        "last_seen": "2025-03-01T09:30:00+01:00", "battery_mv": 2950}]
    (or "uuid", "major", "minor" instead of "beacon"; last_seen may be epoch seconds).
    With --from-hq URL --store ID instead, the list is what the store's online
    gateways report to HQ (GET /api/stores/ID/health; token in $AISLECAST_HQ_TOKEN).

    Exit status: 0 all good, 1 problems found, 2 unreadable input.

    examples:
      aislecast beacons check --plan plans/s042/beacon-plan.json --heard heard.json
      aislecast beacons check --plan plan.json --heard heard.json --json | jq .counts
      aislecast beacons check --plan plan.json --from-hq https://hq.example --store s042
      aislecast beacons check --plan plan.json --heard heard.json --max-age 600 \\
          --low-battery-mv 2400 --now 2025-03-01T09:35:00+01:00
    """
)

_RAW = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    qr = sub.add_parser("qr", help="QR codes and printable shelf label sheets",
                        description=_QR_HELP, formatter_class=_RAW)
    what = qr.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", help="the URL to encode (a short link https://HQ/s/CODE);"
                      " with --hq the landing page to shorten")
    what.add_argument("--sheet", type=Path, metavar="TAGS.csv", help="print labels for a CSV")
    qr.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                    help=".png or .svg for --url; .pdf or .svg for --sheet")
    qr.add_argument("--size", type=int, default=400, metavar="PX",
                    help="image width in pixels (default 400)")
    qr.add_argument("--error-correction", "--ec", dest="ec", default="M",
                    choices=["L", "M", "Q", "H"], help="QR error correction level (default M)")
    qr.add_argument("--border", type=int, default=4, metavar="MODULES",
                    help="quiet zone in modules (default 4, the QR spec's minimum)")
    qr.add_argument("--caption", help="text printed under a single code")
    qr.add_argument("--base-url", metavar="URL",
                    help="HQ address used to build links from the CSV's code column")
    qr.add_argument("--hq", metavar="URL",
                    help="mint (or reuse) the short link at this HQ for --url / each row, "
                         "as the staff token in $AISLECAST_HQ_TOKEN")
    qr.add_argument("--hq-ca", metavar="FILE",
                    help="the CA HQ's HTTPS certificate must verify against (default: "
                         "$AISLECAST_HQ_CA, else the system's trust store)")
    qr.add_argument("--tag-id", metavar="ID", help="the tag the link is for (with --hq --url)")
    qr.add_argument("--store", metavar="ID", help="store of the tag (with --hq)")
    qr.add_argument("--no-src", action="store_true",
                    help="leave ?src=qr off links built from codes")
    qr.set_defaults(func=_qr)

    beacons = sub.add_parser("beacons", help="plan beacon placement and check it",
                             description="Plan where beacons go and check what is heard.",
                             formatter_class=_RAW)
    bsub = beacons.add_subparsers(dest="beacons_command", metavar="COMMAND", required=True)
    plan = bsub.add_parser("plan", help="floor plan -> beacon placement plan",
                           description=_PLAN_HELP, formatter_class=_RAW)
    plan.add_argument("--floorplan", type=Path, required=True, metavar="FILE",
                      help="floor plan, .json or .toml")
    plan.add_argument("-o", "--output", type=Path, metavar="DIR",
                      help="write beacon-plan.json/.csv here instead of standard output")
    plan.add_argument("--format", choices=["json", "csv"],
                      help="output format (default: json on standard output, both in DIR)")
    plan.set_defaults(func=_plan)

    check = bsub.add_parser("check", help="plan vs what the gateways hear",
                            description=_CHECK_HELP, formatter_class=_RAW)
    check.add_argument("--plan", type=Path, required=True, metavar="PLAN.json")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--heard", type=Path, metavar="HEARD.json")
    source.add_argument("--from-hq", metavar="URL",
                        help="take what the store's gateways report at this HQ, as the staff "
                             "token in $AISLECAST_HQ_TOKEN (with --store)")
    check.add_argument("--store", metavar="ID", help="the store (with --from-hq)")
    check.add_argument("--hq-ca", metavar="FILE",
                       help="the CA HQ's HTTPS certificate must verify against (default: "
                            "$AISLECAST_HQ_CA, else the system's trust store)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--max-age", type=float, default=None, metavar="S",
                       help="silence after which a beacon counts as missing (default 300)")
    check.add_argument("--low-battery-mv", type=int, default=None, metavar="MV",
                       help="battery below this is low (default 2500)")
    check.add_argument("--now", metavar="TIME",
                       help="judge ages at this time (epoch seconds or ISO 8601)")
    check.set_defaults(func=_check)


def _qr(args: argparse.Namespace) -> int:

    if args.tag_id is not None and args.hq is None:
        raise ConfigError("--tag-id", "only means something with --hq",
                          hint="add --hq https://HQ so the link is minted for the tag")
    if args.url is not None:
        url = args.url
        if args.hq is not None:
            if not args.tag_id:
                raise ConfigError("--tag-id", "is needed with --hq",
                                  hint="give the shelf tag's id, e.g. --tag-id T-0007")
            link = mint_link(args.hq, args.url, tag=args.tag_id, store=args.store,
                              ca=args.hq_ca)
            print(f"{'minted' if link.created else 'reused'} {link.short} for tag {args.tag_id}")
            url = link.qr
        write_qr(url, args.output, size_px=args.size, ec=args.ec, border=args.border,
                 caption=args.caption)
        print(f"wrote {args.output}")
        return 0
    labels = read_labels(args.sheet, base_url=args.base_url, tag_source=not args.no_src)
    if args.hq is not None:  # one short link per row, minted or reused at HQ
        labels = mint_labels(labels, args.hq, store=args.store, ca=args.hq_ca)
    for path in write_sheet(labels, args.output):
        print(f"wrote {path}")
    print(f"{len(labels)} labels")
    return 0


def _plan(args: argparse.Namespace) -> int:

    plan = make_plan(load_floorplan(args.floorplan))
    for b in plan.beacons:
        if b.warning:
            print(f"warning: {b.id}: {b.warning}", file=sys.stderr)
    if args.output is None:
        if args.format == "csv":
            sys.stdout.write(plan_to_csv(plan))
        else:
            sys.stdout.write(plan_to_json(plan).decode())
        return 0
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        if args.format in (None, "json"):
            (args.output / "beacon-plan.json").write_bytes(plan_to_json(plan))
            print(f"wrote {args.output / 'beacon-plan.json'}")
        if args.format in (None, "csv"):
            (args.output / "beacon-plan.csv").write_text(plan_to_csv(plan), encoding="utf-8")
            print(f"wrote {args.output / 'beacon-plan.csv'}")
    except OSError as exc:
        raise ConfigError("output", f"cannot write to {args.output}: {exc.strerror}",
                          hint="pick a writable directory") from exc
    print(f"{len(plan.beacons)} beacons in {len(plan.zones)} zones, store {plan.store_id}")
    return 0


def _parse_now(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("--now", f"{text!r} is not a time",
                          hint="give epoch seconds or ISO 8601 with a time zone") from exc
    if when.tzinfo is None:
        raise ConfigError("--now", f"{text!r} has no time zone",
                          hint="add one, e.g. 2025-03-01T09:35:00+01:00")
    return when.timestamp()


def _check(args: argparse.Namespace) -> int:

    try:
        if args.from_hq is not None and not args.store:
            raise ConfigError("--store", "is required with --from-hq",
                              hint="name the store whose gateways to ask, e.g. --store s042")
        plan = load_plan(args.plan)
        heard = (chk.load_heard(args.heard) if args.from_hq is None
                 else fetch_heard(args.from_hq, args.store, ca=args.hq_ca))
        report = chk.check_plan(
            plan, heard, now=_parse_now(args.now),
            max_age_s=chk.DEFAULT_MAX_AGE_S if args.max_age is None else args.max_age,
            low_battery_mv=(chk.DEFAULT_LOW_BATTERY_MV if args.low_battery_mv is None
                            else args.low_battery_mv),
        )
    except ConfigError as exc:
        print(f"aislecast: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(chk.format_report(report))
    return 0 if report.ok else 1
