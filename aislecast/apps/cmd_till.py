"""``aislecast till redeem|purchase``: the reference till (POS) client
(docs/architecture.md#till-and-redemption-codes)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

import msgspec

from aislecast.apps.till_client import TILL_TOKEN_ENV, TillClient, TillRefusal, parse_line
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.httpclient import hq_ca

__all__ = ["EXIT_REFUSED", "register"]

#: the exit code when HQ refused the call (the reason is printed); 1 is any other error
EXIT_REFUSED = 3

_HELP = textwrap.dedent(
    """\
    Talk to HQ as a store's till, with a till token in $AISLECAST_TILL_TOKEN
    (`aislecast hq tokens issue --kind till --store STORE`).

    examples:
      export AISLECAST_TILL_TOKEN=$(aislecast hq tokens issue --kind till --store s042 \\
          --name lane-3 --json | jq -r .token)
      aislecast till redeem K3QF-7ZQA-AAAB-CDEF-GHIJ-KLMN --txn 2024-0001 --hq http://hq:8080
      aislecast till purchase --txn 2024-0001 --member MABCDEFGHIJKLMNOP \\
          --line milk-1l:dairy:2:258 --line :bakery:1:199 --hq http://hq:8080

    Exit codes: 0 done, 3 refused by HQ (the reason is printed: forged, expired,
    used, foreign_store, unknown_till, too_many_lines, ...), 1 any other error.
    """
)
_REDEEM_HELP = textwrap.dedent(
    """\
    Redeem a shopper's single-use code (typed, or scanned from the offer's QR code;
    dashes, spaces and lower case do not matter). The same --txn again gets the same
    answer, so a till that lost HQ's reply simply retries. (`aislecast phone listen`
    prints each offer's redeem_code.)

    examples:
      $ aislecast till redeem K3QF-7ZQA-AAAB-CDEF-GHIJ-KLMN --txn 2024-0001
      redeemed campaign=milk-week variant=a offer=9f3c... txn=2024-0001
      $ aislecast till redeem K3QF-7ZQA-AAAB-CDEF-GHIJ-KLMN --txn 2024-0002
      aislecast till: refused (used): code: already redeemed at 2024-05-01 10:02:11 UTC
    """
)
_PURCHASE_HELP = textwrap.dedent(
    """\
    Send a transaction's basket lines: each --line is PRODUCT:CATEGORY:QTY:VALUE with the
    value in cents (product or category may be left empty). --member is the id the
    wallet's member QR carries; a member HQ does not know is kept as an anonymous sale.
    Sending the same --txn again stores nothing twice.

    examples:
      $ aislecast till purchase --txn 2024-0001 --member MABCDEFGHIJKLMNOP \\
            --line milk-1l:dairy:2:258 --line :bakery:1:199
      stored 2 of 2 lines (member known) txn=2024-0001
      $ aislecast till purchase --txn 2024-0002 --line cola-6:drinks:1:499 --json
    """
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hq", default=os.environ.get("AISLECAST_HQ", "http://127.0.0.1:8080"),
                   metavar="URL", help="HQ's address (default: $AISLECAST_HQ, else "
                                       "http://127.0.0.1:8080)")
    p.add_argument("--hq-ca", metavar="FILE",
                   help="the CA HQ's HTTPS certificate must verify against (default: "
                        "$AISLECAST_HQ_CA, else the system's trust store)")
    p.add_argument("--txn", required=True, metavar="ID",
                   help="the till's transaction id (letters, digits, '.', '_', ':', '-')")
    p.add_argument("--store", metavar="ID", help="the store, if the till token serves several")
    p.add_argument("--json", action="store_true", help="print HQ's answer as one JSON object")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("till", help="the reference till client: redeem codes, send baskets",
                       description=_HELP, formatter_class=fmt)
    till = p.add_subparsers(dest="till_command", metavar="ACTION", required=True)
    r = till.add_parser("redeem", help="redeem a single-use offer code", description=_REDEEM_HELP,
                        formatter_class=fmt)
    r.add_argument("code", metavar="CODE", help="the code, e.g. K3QF-7ZQA-AAAB-CDEF-GHIJ-KLMN")
    _common(r)
    r.set_defaults(func=_redeem)
    b = till.add_parser("purchase", help="send a transaction's basket lines",
                        description=_PURCHASE_HELP, formatter_class=fmt)
    b.add_argument("--member", metavar="ID", help="member id from the wallet's member QR")
    b.add_argument("--line", action="append", required=True, metavar="P:C:QTY:CENTS",
                   help="a basket line (repeat it)")
    b.add_argument("--ts", type=float, metavar="UNIX", help="when it was bought (default: now)")
    _common(b)
    b.set_defaults(func=_purchase)


def _client(args: argparse.Namespace) -> TillClient:
    token = os.environ.get(TILL_TOKEN_ENV, "")
    if not token:
        raise ConfigError(TILL_TOKEN_ENV, "is not set: HQ answers tills with a till token only",
                          hint="export AISLECAST_TILL_TOKEN=$(aislecast hq tokens issue --kind "
                               "till --store STORE --json | jq -r .token)")
    return TillClient(args.hq, token, ca=hq_ca(args.hq_ca))


def _refused(exc: TillRefusal) -> int:
    print(f"aislecast till: {exc}", file=sys.stderr)
    return EXIT_REFUSED


def _redeem(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        got = client.redeem(args.code, args.txn, store=args.store)
    except TillRefusal as exc:
        return _refused(exc)
    if args.json:
        sys.stdout.write(msgspec.json.encode(got).decode() + "\n")
    else:
        again = " (replayed: already redeemed by this transaction)" if got.get("replay") else ""
        print(f"redeemed campaign={got.get('campaign')} variant={got.get('variant')} "
              f"offer={got.get('offer') or '(not yet reported)'} txn={got.get('txn')}{again}")
    return 0


def _purchase(args: argparse.Namespace) -> int:
    lines = [parse_line(text) for text in args.line]
    client = _client(args)
    try:
        got = client.purchase(args.txn, lines, member=args.member, ts=args.ts, store=args.store)
    except TillRefusal as exc:
        return _refused(exc)
    if args.json:
        sys.stdout.write(msgspec.json.encode(got).decode() + "\n")
    else:
        print(f"stored {got.get('stored')} of {got.get('lines')} lines "
              f"(member {got.get('member')}) txn={got.get('txn')}")
    return 0
