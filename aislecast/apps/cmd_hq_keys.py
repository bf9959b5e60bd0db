"""``aislecast hq keys list|next|rotate|retire``: HQ's bundle-signing keyring (hq.keyring).

Each action changes the keyring file beside the signing key; a running HQ notices
within seconds and republishes every store's bundle, announcing the new ring.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import textwrap
from collections.abc import Callable
from typing import Final

from aislecast.apps.configfile import config_exit_code
from hq.config import load_hq_config
from hq.keyring import Keyring, RingKey

__all__ = ["register_keys"]

_RAW: Final = argparse.RawDescriptionHelpFormatter
_HELP = textwrap.dedent(
    """\
    HQ signs bundles with its current Ed25519 key; gateways accept bundles only from
    keys they pin. Rotating with an overlap:

      1. aislecast hq keys next      a next key; every bundle announces it, signed by
                                     the current key, and gateways pin it
      2. wait until every gateway pins it (its keys_pinned metric is 2), or pin
         it by config: hq_public_key = ["current.pem", "next.pem"]
      3. aislecast hq keys rotate    the next key signs from now on; the old one is
                                     "previous" and still accepted
      4. aislecast hq keys retire    the previous key's private half is deleted and
                                     gateways refuse what it signed, for good

    The keyring is DATA_DIR/hq-signing.ring.json (0600, beside the signing key); a
    running HQ applies a change within seconds. docs/architecture.md (Trust model)
    explains the procedure.

    examples:
      aislecast hq keys list --config hq.toml
      aislecast hq keys list --json         # with each key's public PEM, to pin by config
      aislecast hq keys next --config hq.toml
      aislecast hq keys rotate --config hq.toml
      aislecast hq keys retire --config hq.toml          # the previous key
      aislecast hq keys retire 3f9c0a1b2c3d4e5f          # or one named by its id
    """
)


def _ring(args: argparse.Namespace) -> Keyring:
    cfg = load_hq_config(args.config, {"signing_key": args.key} if args.key else None)
    return Keyring.load(cfg.key_path())


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _row(key: RingKey) -> dict[str, object]:
    return {"kid": key.kid, "state": key.state, "created_at": key.created_at,
            "changed_at": key.changed_at, "public_key": key.public_key}


def _list(args: argparse.Namespace) -> int:
    ring = _ring(args)
    if args.json:
        print(json.dumps([_row(k) for k in ring.keys], indent=2))
        return 0
    for k in ring.keys:
        print(f"{k.kid}  {k.state:<8}  made {_when(k.created_at)}, since {_when(k.changed_at)}")
    print(f"keyring: {ring.path}")
    return 0


def _next(args: argparse.Namespace) -> int:
    key = _ring(args).add_next()
    print(f"next key {key.kid}: bundles announce it from now on; once every gateway pins it, "
          "run: aislecast hq keys rotate")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    new, old = _ring(args).rotate()
    print(f"key {new.kid} signs from now on; {old.kid} is the previous key, still accepted. "
          f"Once every gateway has a bundle signed by {new.kid}, run: aislecast hq keys retire")
    return 0


def _retire(args: argparse.Namespace) -> int:
    key = _ring(args).retire(args.kid)
    print(f"key {key.kid} retired: its private half is deleted and gateways refuse "
          "bundles signed by it")
    return 0


def register_keys(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = hsub.add_parser("keys", help="list and rotate the bundle-signing keys",
                           description=_HELP, formatter_class=_RAW)
    ksub = keys.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)

    def action(name: str, helptext: str, func: Callable[[argparse.Namespace], int]
               ) -> argparse.ArgumentParser:
        p = ksub.add_parser(name, help=helptext, description=_HELP, formatter_class=_RAW)
        p.add_argument("--config", metavar="FILE", help="hq.toml (default: built-in defaults)")
        p.add_argument("--key", metavar="FILE", help="the signing key file, overriding "
                                                     "hq.toml (default: hq-data/hq-signing.pem)")
        p.set_defaults(func=config_exit_code(func))
        return p

    ls = action("list", "the keys, their ids and states", _list)
    ls.add_argument("--json", action="store_true", help="one JSON list, public keys included")
    action("next", "make the next key (announced, not signing yet)", _next)
    action("rotate", "sign with the next key from now on", _rotate)
    retire = action("retire", "delete a previous (or next) key: gateways drop it", _retire)
    retire.add_argument("kid", nargs="?", metavar="KID",
                        help="the key id (default: the previous key)")
