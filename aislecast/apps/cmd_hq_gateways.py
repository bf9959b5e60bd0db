"""``aislecast hq gateways add|list|revoke``: gateways' broker logins from the shell.

``add`` registers ``gw.{store}.{gateway}`` in HQ's credential registry and writes a
ready gateway.toml: HQ's broker address, the username, the password in a 0600 file next
to it (never in the TOML), HQ's bundle-signing public key pinned inline, the store and
gateway ids. ``revoke`` removes the login. When hq.toml names the broker's
``auth_dir`` (the broker runs on this host), both re-render the broker's files and
SIGHUP it through ``pid_file`` at once, so a revoked gateway is kicked within a second;
otherwise a running HQ (or the broker host's sync) applies the registry.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aislecast.apps.configfile import config_exit_code
from aislecast.kernel.acl import gateway_username
from aislecast.kernel.errors import AislecastError, ConfigError
from aislecast.kernel.privatefile import write_private
from aislecast.kernel.signing import load_or_create_signing_key, public_key_pem
from hq.audit import AuditLog
from hq.broker_auth import BrokerAuthFiles
from hq.broker_sync import apply_registry, pid_from_file
from hq.config import HqConfig, load_hq_config
from hq.credentials import CredentialRegistry
from hq.db import HqDb
from hq.service import check_id

__all__ = ["register_gateways", "render_gateway_toml"]

_RAW: Final = argparse.RawDescriptionHelpFormatter
_HELP = textwrap.dedent(
    """\
    Gateways' broker logins, kept in HQ's credential registry (HQ stores only the
    password's hash). `add` prints where it wrote gateway.toml and the password file
    (0600; copy both to the gateway); `revoke` ends the gateway's session within seconds
    when the broker runs on this host (hq.toml [broker] auth_dir and pid_file), and it
    is refused from then on.

    examples:
      aislecast hq gateways add store-1 gw-1 --config hq.toml -o gw-1.toml
      aislecast hq gateways add store-1 gw-2 --broker mqtt.store-1.example:1883
      aislecast hq gateways list --json
      aislecast hq gateways revoke store-1 gw-1 --config hq.toml
    """
)


def render_gateway_toml(*, store: str, gateway: str, host: str, port: int, username: str,
                        password_file: Path, public_key: str, tls_ca: str | None) -> str:
    """A gateway.toml that ``gateway.config.load_config`` accepts as is."""
    lines = [
        f"# written by `aislecast hq gateways add {store} {gateway}`; the other sections",
        "# keep their defaults (`aislecast gateway init` lists them all)",
        f"gateway = {json.dumps(gateway)}",
        f"store = {json.dumps(store)}",
        "# HQ's bundle-signing key, pinned: bundles signed by any other key are refused",
        f'hq_public_key = """\n{public_key.strip()}\n"""',
        "",
        '[scanner]  # required: "bluez" is a real adapter, "sim" the simulated store',
        'backend = "bluez"',
        'adapter = "hci0"',
        "",
        "[broker]",
        f"host = {json.dumps(host)}",
        f"port = {port}",
        f"username = {json.dumps(username)}",
        f"password_file = {json.dumps(str(password_file))}  # 0600, read once at start",
    ]
    if tls_ca is not None:
        lines.append(f"tls_ca = {json.dumps(tls_ca)}")
    return "\n".join(lines) + "\n"


def _open(args: argparse.Namespace) -> tuple[HqConfig, HqDb]:
    cfg = load_hq_config(args.config, {"database.url": args.db} if args.db else None)
    return cfg, HqDb(cfg.db_url())


def _apply(cfg: HqConfig, registry: CredentialRegistry) -> str:
    b = cfg.broker
    if b.auth_dir is None:
        return "the broker follows when HQ next renders its files (no [broker] auth_dir here)"
    pid = None if b.pid_file is None else pid_from_file(Path(b.pid_file))
    users, reloaded = apply_registry(registry, BrokerAuthFiles(Path(b.auth_dir)), pid)
    return (f"broker files in {b.auth_dir} rewritten ({users} users)"
            + ("; broker reloaded" if reloaded else "; no broker pid found to reload"))


def _ids(args: argparse.Namespace) -> None:
    problems = check_id("STORE", args.store) + check_id("GW", args.gateway)
    if problems:
        raise ConfigError(problems[0].split(":")[0], problems[0].partition(": ")[2],
                          hint="use the ids the store and gateway have in HQ")


def _add(args: argparse.Namespace) -> int:
    _ids(args)
    cfg, db = _open(args)
    out = Path(args.output)
    secret = out.with_suffix(".mqtt-password")
    if out.exists() and not args.force:
        raise ConfigError("-o", f"{out} exists", hint="choose another path or pass --force")
    host, port = cfg.broker.host, cfg.broker.port
    if args.broker is not None:
        host, _, raw = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
        if raw and not raw.isdecimal():
            raise ConfigError("--broker", f"{args.broker!r} is not HOST[:PORT]",
                              hint="e.g. --broker mqtt.store-1.example:1883")
        port = int(raw) if raw else port
    key = public_key_pem(load_or_create_signing_key(cfg.key_path()).public_key())
    registry = CredentialRegistry(db)
    username, password = registry.issue_gateway(args.store, args.gateway)
    write_private(secret, password + "\n")
    write_private(out, render_gateway_toml(store=args.store, gateway=args.gateway, host=host,
                                           port=port, username=username,
                                           password_file=secret.resolve(), public_key=key,
                                           tls_ca=cfg.broker.tls_ca))
    AuditLog(db).record(f"cli:{getpass.getuser()}", "broker.gateway.add", f"broker_user:{username}",
                        after={"store": args.store, "gateway": args.gateway})
    print(f"registered {username}; wrote {out} and {secret} (0600: copy both to the gateway)")
    print(_apply(cfg, registry))
    return 0


def _list(args: argparse.Namespace) -> int:
    _, db = _open(args)
    rows = [{"username": u.username, "store": u.store, "gateway": u.gateway,
             "created": dt.datetime.fromtimestamp(u.created_at, dt.UTC).isoformat(timespec="seconds"),
             "revoked": None if u.revoked_at is None else
             dt.datetime.fromtimestamp(u.revoked_at, dt.UTC).isoformat(timespec="seconds")}
            for u in CredentialRegistry(db).users("gateway", active=not args.all)]
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        state = f"revoked {r['revoked']}" if r["revoked"] else "active"
        print(f"{r['username']:40} {r['store']:16} {r['gateway']:16} {r['created']}  {state}")
    if not rows:
        print("no gateways registered")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _ids(args)
    cfg, db = _open(args)
    registry = CredentialRegistry(db)
    username = gateway_username(args.store, args.gateway)
    if not registry.revoke(username):
        raise ConfigError("GW", f"{username} has no active broker login",
                          hint="see `aislecast hq gateways list`")
    AuditLog(db).record(f"cli:{getpass.getuser()}", "broker.gateway.revoke",
                        f"broker_user:{username}", after={"revoked": True})
    print(f"revoked {username}")
    print(_apply(cfg, registry))
    return 0


def _run(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``fn`` with a bad setting (:class:`ConfigError`, exit 2) or an unusable id or
    other refusal (:class:`AislecastError`, exit 1) printed as one line."""
    guarded = config_exit_code(fn)

    def run(args: argparse.Namespace) -> int:
        try:
            return guarded(args)
        except AislecastError as exc:
            print(f"aislecast: error: {exc}", file=sys.stderr)
            return 1

    return run


def register_gateways(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = hsub.add_parser("gateways", help="add, list and revoke gateways' broker logins",
                        description=_HELP, formatter_class=_RAW)
    gsub = p.add_subparsers(dest="gateways_cmd", metavar="ACTION", required=True)
    add = gsub.add_parser("add", help="register a gateway and write its gateway.toml",
                          description=_HELP, formatter_class=_RAW)
    rev = gsub.add_parser("revoke", help="revoke a gateway's login", description=_HELP,
                          formatter_class=_RAW)
    for sp in (add, rev):
        sp.add_argument("store", metavar="STORE")
        sp.add_argument("gateway", metavar="GW")
    add.add_argument("-o", "--output", default="gateway.toml", metavar="FILE",
                     help="where to write gateway.toml; the password goes next to it as "
                          "FILE.mqtt-password (default: %(default)s)")
    add.add_argument("--broker", metavar="HOST[:PORT]",
                     help="the broker address the gateway uses (default: hq.toml's [broker])")
    add.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    ls = gsub.add_parser("list", help="list gateways' logins (never their passwords)",
                         description=_HELP, formatter_class=_RAW)
    ls.add_argument("--all", action="store_true", help="revoked ones too")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    for sp, fn in ((add, _add), (ls, _list), (rev, _revoke)):
        sp.add_argument("--config", metavar="FILE", help="hq.toml naming the database and broker")
        sp.add_argument("--db", metavar="URL", help="sqlite:///PATH or postgresql://... "
                        "(default: the one in --config, else sqlite:///hq-data/hq.sqlite)")
        sp.set_defaults(func=_run(fn))
