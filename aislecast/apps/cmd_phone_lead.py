"""``aislecast phone lead``: submit a lead creative's form for an offer, wait for HQ's ack.

The form travels as a ``Feedback`` of kind ``lead`` with its ``fields`` on the phone's
``…/feedback`` topic (docs/architecture.md#leads); the command exits 0 once HQ's
``FeedbackAck`` names it, 1 when none came within ``--wait`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from aislecast.apps.phone import Phone
from aislecast.kernel.campaign import LEAD_FIELDS, MAX_LEAD_FIELDS, MAX_LEAD_VALUE
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.schema import Offer

__all__ = ["add_lead_args", "parse_fields", "submit"]


def parse_fields(pairs: list[str]) -> dict[str, str]:
    """``k=v`` pairs into a form; an unknown field, a repeat or an over-long value is a
    :class:`ConfigError` on ``--field``."""
    out: dict[str, str] = {}
    hint = f"NAME=VALUE with NAME one of {', '.join(sorted(LEAD_FIELDS))}"
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or k not in LEAD_FIELDS:
            raise ConfigError("--field", f"{pair[:40]!r} is not a known field", hint=hint)
        if k in out:
            raise ConfigError("--field", f"{k} is given twice", hint=hint)
        if len(v) > MAX_LEAD_VALUE:
            raise ConfigError("--field", f"{k} has {len(v)} characters, at most {MAX_LEAD_VALUE}")
        out[k] = v
    if not 1 <= len(out) <= MAX_LEAD_FIELDS:
        raise ConfigError("--field", f"a lead needs 1 to {MAX_LEAD_FIELDS} fields", hint=hint)
    return out


def add_lead_args(a: argparse.ArgumentParser) -> None:
    """``phone lead``'s own options (``--me``, ``--broker``, ``--tls-ca`` are shared)."""
    a.add_argument("--offer", required=True, help="the offer id (from `phone listen`)")
    a.add_argument("--campaign", required=True)
    a.add_argument("--store", required=True)
    a.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                   help="one form field (repeatable), e.g. --field name=Ana --field party_size=2")
    a.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="seconds to wait for HQ's acknowledgement (default: %(default)s)")


async def submit(phone: Phone, args: argparse.Namespace, fields: dict[str, str]) -> bool:
    """Publish the lead on ``phone`` (an :class:`aislecast.apps.phone.Phone`, entered)
    and wait until HQ acknowledges it; True when it did."""
    now = time.time()
    offer = Offer(v=1, id=args.offer, campaign=args.campaign, variant="", store=args.store,
                  inbox=phone.inbox, title="", body="", cta="", url=None, issued_at=now,
                  expires_at=now + 60)
    fid = await phone.feedback(offer, "lead", fields)
    try:
        async with asyncio.timeout(args.wait):
            await phone.wait_acked(fid)
    except TimeoutError:
        pass
    acked = fid not in phone.unacked
    print(json.dumps({"lead": fid, "acked": acked}), file=sys.stdout if acked else sys.stderr)
    return acked
