"""``aislecast phone``: the reference shopper client (enroll, listen, report sightings)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import textwrap
import time
import urllib.error
import urllib.request
from typing import Final

from aislecast.apps.cmd_phone_lead import add_lead_args, parse_fields, submit
from aislecast.apps.configfile import config_exit_code
from aislecast.apps.phone import Phone, PhoneBehaviour, with_login
from aislecast.kernel import topics
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.httpclient import HQ_CA_ENV, hq_ca, hq_request
from aislecast.kernel.logs import setup_logging
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, PhoneSighting, encode
from aislecast.kernel.tokens import eid_for

__all__ = ["WALLET_TOKEN_ENV", "register"]

WALLET_TOKEN_ENV: Final = "AISLECAST_WALLET_TOKEN"  # noqa: S105 - a variable's name

_HELP = textwrap.dedent(
    """\
    The reference shopper client, for trying a store by hand.

    examples:
      export AISLECAST_WALLET_TOKEN=...   # aislecast hq tokens issue --kind wallet
      aislecast phone enroll --hq http://127.0.0.1:8080 > me.json     # opt in, keep the key
      aislecast phone enroll --hq https://hq.example.com --hq-ca ca.crt > me.json
      aislecast phone listen --me me.json --broker 127.0.0.1:1883     # print offers as they come
      aislecast phone listen --me me.json --broker mqtt.example:8883 --tls-ca ca.crt   # over TLS
      aislecast phone listen --me me.json --sightings-stdin   # and sightings, one connection
      aislecast phone sight --me me.json --store store-1 --beacon b-bakery --rssi -62
      aislecast phone lead --me me.json --offer ID --campaign C --store store-1 --field name=Ana
      aislecast phone token --me me.json                              # today's rotating token
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("phone", help="reference shopper client", description=_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="phone_cmd", metavar="ACTION", required=True)
    e = psub.add_parser("enroll", help="opt in at HQ; prints the enrollment as JSON")
    e.add_argument("--hq", default="http://127.0.0.1:8080")
    e.add_argument("--token", metavar="TOKEN",
                   help="HQ's wallet service token (default: $AISLECAST_WALLET_TOKEN): "
                        "enrolment is the wallet's, not an anonymous caller's")
    e.add_argument("--hq-ca", metavar="FILE",
                   help=f"the CA HQ's HTTPS certificate must verify against (default: "
                        f"${HQ_CA_ENV}, else the system's trust store)")
    e.add_argument("--consent", action="append", default=None,
                   help="consent purpose: offers, personalisation or analytics (repeatable; "
                        "default: offers)")
    e.add_argument("--home-store", action="append", default=[], metavar="STORE",
                   help="a home store: its gateways know the shopper at once (repeatable; "
                        "default: none, each store admits the shopper at their first visit)")
    e.set_defaults(func=config_exit_code(_enroll))
    for name, fn, helptext in (("listen", _listen, "print offers sent to this phone"),
                               ("sight", _sight, "publish a phone-observed beacon sighting"),
                               ("lead", _lead, "submit a lead form for an offer, wait for the ack"),
                               ("token", _token, "print the current rotating token")):
        a = psub.add_parser(name, help=helptext)
        a.add_argument("--me", required=True, help="enrollment JSON written by `phone enroll`")
        a.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                       help="the broker's phone listener (default: %(default)s)")
        a.add_argument("--tls-ca", metavar="FILE",
                       help="connect over TLS, verifying the broker with this CA certificate "
                            "(PEM); without it: plain TCP")
        a.set_defaults(func=config_exit_code(fn))
        if name == "sight":
            a.add_argument("--store", required=True)
            a.add_argument("--beacon", required=True)
            a.add_argument("--rssi", type=int, required=True)
        if name == "lead":
            add_lead_args(a)
        if name == "listen":
            a.add_argument("--sightings-stdin", action="store_true",
                           help="also publish sightings read from standard input, one "
                                "'STORE BEACON RSSI' a line, on this same connection (a broker "
                                "that makes the username the client id lets one connection "
                                "per phone in: `phone sight` beside `phone listen` would "
                                "take over its session)")


_ENROLLMENT_KEYS: Final = ("inbox", "identity_key", "rotation_k")
_LEVEL: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a store id, one MQTT topic level


def _load(path: str) -> dict[str, object]:
    """The enrolment file; a missing or broken one is a :class:`ConfigError` on --me."""
    fix = "pass the file `aislecast phone enroll > me.json` wrote"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError("--me", f"{path} does not exist", hint=fix) from None
    except OSError as exc:
        raise ConfigError("--me", f"{path} cannot be read ({exc.strerror})", hint=fix) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError("--me", f"{path} is not an enrolment (not JSON)", hint=fix) from None
    missing = [k for k in _ENROLLMENT_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConfigError("--me", f"{path} is not an enrolment (no {', '.join(missing)})",
                          hint=fix)
    return data  # type: ignore[no-any-return]


def _enroll(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(WALLET_TOKEN_ENV)
    if not token:
        print(f"aislecast: error: --token: no wallet token (nor ${WALLET_TOKEN_ENV}) "
              "(issue one with: aislecast hq tokens issue --kind wallet)", file=sys.stderr)
        return 2
    body = json.dumps({"consents": args.consent or ["offers"],
                       "home_stores": args.home_store}).encode()
    req = urllib.request.Request(f"{args.hq.rstrip('/')}/api/shoppers", data=body,  # noqa: S310
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"}, method="POST")
    try:
        reply = hq_request(req, ca=hq_ca(args.hq_ca), timeout=10)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        print(f"aislecast: error: HQ refused the enrolment ({exc.code}): {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:  # refused, no route, DNS, timeout
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror.lower()
        print(f"aislecast: error: --hq: cannot reach HQ at {args.hq} ({reason}) "
              "(is HQ running there? check the address)", file=sys.stderr)
        return 1
    print(reply.body.decode())
    return 0


def _settings(broker: str, tls_ca: str | None) -> MqttSettings:
    host, _, port = broker.rpartition(":")
    if not port.isdecimal():
        raise ConfigError("--broker", f"{broker!r} is not HOST:PORT", hint="e.g. 127.0.0.1:8883")
    if tls_ca is not None and not os.path.isfile(tls_ca):
        raise ConfigError("--tls-ca", f"{tls_ca} is not a file",
                          hint="give the CA certificate (PEM) that signed the broker's certificate")
    return MqttSettings(host=host or "127.0.0.1", port=int(port), tls_ca=tls_ca)


def _phone(args: argparse.Namespace, role: str) -> Phone:

    me = _load(args.me)
    user, password = me.get("broker_username"), me.get("broker_password")
    mqtt = with_login(_settings(args.broker, args.tls_ca), None if user is None else str(user),
                      None if password is None else str(password))
    return Phone(mqtt, inbox=str(me["inbox"]),
                 identity_key=bytes.fromhex(str(me["identity_key"])),
                 rotation_k=int(str(me["rotation_k"])),
                 behaviour=PhoneBehaviour(open_p=0.0), role=role,
                 on_offer=lambda o: print(json.dumps({"offer": o.id, "store": o.store,
                                                      "title": o.title, "campaign": o.campaign,
                                                      "expires_in_s": round(o.expires_at - time.time()),
                                                      "coupon": o.coupon_code,
                                                      "redeem_code": o.redeem_code}), flush=True))


def _listen(args: argparse.Namespace) -> int:
    setup_logging("warning")

    phone = _phone(args, "listen")  # reads --me and checks the settings before any loop runs

    async def main() -> None:
        async with phone:
            print("listening for offers (Ctrl-C to stop)", file=sys.stderr)
            if not args.sightings_stdin:
                await asyncio.Event().wait()
            while line := await asyncio.to_thread(sys.stdin.readline):
                await _sight_line(phone, line)
            await asyncio.Event().wait()  # standard input closed: keep listening

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 0
    return 0


def _sight(args: argparse.Namespace) -> int:

    phone = _phone(args, "sight")  # reads --me and checks the settings before any loop runs

    async def main() -> None:
        async with phone:
            await _publish_sighting(phone, args.store, args.beacon, args.rssi)

    asyncio.run(main())
    return 0


async def _publish_sighting(phone: Phone, store: str, beacon: str, rssi: int) -> None:
    s = PhoneSighting(v=SCHEMA_VERSION, token=phone.token().hex(), beacon=beacon, rssi=rssi,
                      ts=time.time())
    await phone.link.publish(topics.sightings(store, phone.inbox), encode(s), qos=1)


async def _sight_line(phone: Phone, line: str) -> None:
    """One 'STORE BEACON RSSI' line of ``listen --sightings-stdin``; a bad one is said on
    standard error and skipped (the listener keeps running)."""
    parts = line.split()
    if not parts:
        return
    if len(parts) != 3 or not parts[2].lstrip("-").isdecimal() or not _LEVEL.fullmatch(parts[0]):
        print(f"aislecast: error: stdin: {line.strip()[:80]!r} is not 'STORE BEACON RSSI' "
              "(e.g. store-1 b-bakery -62); skipped", file=sys.stderr)
        return
    await _publish_sighting(phone, parts[0], parts[1], int(parts[2]))
    print(json.dumps({"sighting": {"store": parts[0], "beacon": parts[1], "rssi": int(parts[2])}}),
          flush=True)


def _lead(args: argparse.Namespace) -> int:
    setup_logging("warning")
    fields = parse_fields(args.field)
    if not _LEVEL.fullmatch(args.store):
        raise ConfigError("--store", f"{args.store[:40]!r} is not a store id")
    phone = _phone(args, "lead")

    async def main() -> bool:
        async with phone:
            return await submit(phone, args, fields)

    return 0 if asyncio.run(main()) else 1


def _token(args: argparse.Namespace) -> int:

    me = _load(args.me)
    print(eid_for(bytes.fromhex(str(me["identity_key"])), time.time(), int(str(me["rotation_k"]))).hex())
    return 0
