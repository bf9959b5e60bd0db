"""``aislecast hq gateways add|list|revoke``: gateways' broker logins from the shell.

``add`` registers ``gw.{store}.{gateway}`` in HQ's credential registry and writes a
ready gateway.toml: HQ's broker address, the username, the password in a 0600 file next
to it (never in the TOML), HQ's bundle-signing public key pinned inline, the store and
gateway ids. With ``--tls`` (the default when hq.toml sets ``[broker] gateway_port``)
the gateway gets a client certificate from HQ's CA instead of a password: key (0600),
certificate and CA next to gateway.toml, which then points at the broker's mutual-TLS
listener (:mod:`hq.gateway_certs`). ``revoke`` removes the login and lists the
gateway's certificates in the CRL. When hq.toml names the broker's ``auth_dir`` (the
broker runs on this host), both re-render the broker's files (and its CRL copy) and
SIGHUP it through ``pid_file`` at once, so a revoked gateway is kicked within a second
(a certificate's open session by a take-over of its client id); otherwise a running HQ
(or the broker host's sync) applies the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aiomqtt

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
from hq.gateway_certs import (
    GatewayTlsFiles,
    end_gateway_session,
    ensure_crl,
    issue_gateway_cert,
    issued_serials,
    revoke_gateway_certs,
    throwaway_certs,
)
from hq.pki import CertificateAuthority, PkiError, load_ca
from hq.service import check_id

__all__ = ["register_gateways", "render_gateway_toml"]

_RAW: Final = argparse.RawDescriptionHelpFormatter
_HELP = textwrap.dedent(
    """\
    Gateways' broker logins, kept in HQ's credential registry (HQ stores only the
    password's hash). `add` prints where it wrote gateway.toml and the password file
    (0600; copy both to the gateway), or with --tls (the default when hq.toml sets
    [broker] gateway_port) the gateway's client certificate, its key (0600) and HQ's CA;
    `revoke` ends the gateway's session within seconds when the broker runs on this host
    (hq.toml [broker] auth_dir and pid_file, and gateway_port for certificates), and it
    is refused from then on (its certificates are in the CRL).

    examples:
      aislecast hq gateways add store-1 gw-1 --config hq.toml -o gw-1.toml
      aislecast hq gateways add store-1 gw-2 --broker mqtt.store-1.example:1883
      aislecast hq gateways add store-1 gw-3 --tls --broker mqtt.example:8884 -o gw-3.toml
      aislecast hq gateways list --json
      aislecast hq gateways revoke store-1 gw-1 --config hq.toml
    """
)


def render_gateway_toml(*, store: str, gateway: str, host: str, port: int, username: str,
                        password_file: Path | None, public_key: str, tls_ca: str | None,
                        tls: GatewayTlsFiles | None = None) -> str:
    """A gateway.toml that ``gateway.config.load_config`` accepts as is: a password
    login (``password_file``) or, with ``tls``, a client certificate (its CN is the
    username, so neither username nor password)."""
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
    ]
    if tls is not None:
        lines += [
            f"# mutual TLS: this certificate's CN {username} is the broker username",
            f"tls_ca = {json.dumps(str(tls.ca))}  # HQ's CA: verifies the broker",
            f"tls_cert = {json.dumps(str(tls.cert))}",
            f"tls_key = {json.dumps(str(tls.key))}  # 0600",
        ]
        return "\n".join(lines) + "\n"
    lines += [
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


def _address(args: argparse.Namespace, cfg: HqConfig, tls: bool) -> tuple[str, int]:
    """The broker address for gateway.toml: ``--broker``, else hq.toml's [broker]
    (``gateway_port``, the mutual-TLS listener, for a certificate login)."""
    b = cfg.broker
    host, port = b.host, b.gateway_port if tls else b.port
    if args.broker is not None:
        host, _, raw = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
        if raw and not raw.isdecimal():
            raise ConfigError("--broker", f"{args.broker!r} is not HOST[:PORT]",
                              hint="e.g. --broker mqtt.store-1.example:8884")
        port = int(raw) if raw else port
    if port is None:
        raise ConfigError("--tls", "no port for the broker's mutual-TLS listener",
                          hint="set [broker] gateway_port in hq.toml or pass --broker HOST:PORT")
    return host, port


def _ca(cfg: HqConfig) -> CertificateAuthority:
    directory = Path(cfg.data_dir) / "ca"
    try:
        return load_ca(directory)
    except PkiError as exc:
        raise ConfigError("--tls", f"no certificate authority in {directory} ({exc.message})",
                          hint="create it with `aislecast hq init --config hq.toml`") from None


def _add(args: argparse.Namespace) -> int:
    _ids(args)
    cfg, db = _open(args)
    out = Path(args.output)
    secret = out.with_suffix(".mqtt-password")
    if out.exists() and not args.force:
        raise ConfigError("-o", f"{out} exists", hint="choose another path or pass --force")
    tls = args.tls or cfg.broker.gateway_port is not None
    host, port = _address(args, cfg, tls)
    ca = _ca(cfg) if tls else None
    key = public_key_pem(load_or_create_signing_key(cfg.key_path()).public_key())
    registry = CredentialRegistry(db)
    # with a certificate the registry entry carries the ACL block; its password is
    # random and never written anywhere, so only the certificate logs in
    username, password = registry.issue_gateway(args.store, args.gateway)
    files = None
    if ca is not None:
        files = issue_gateway_cert(ca, username, out.parent.resolve())
        if cfg.broker.auth_dir is not None:
            ensure_crl(ca, BrokerAuthFiles(Path(cfg.broker.auth_dir)).crl_path)
        wrote = f"{out}, {files.cert} and {files.ca}, key {files.key} (0600)"
    else:
        write_private(secret, password + "\n")
        wrote = f"{out} and {secret} (0600)"
    write_private(out, render_gateway_toml(store=args.store, gateway=args.gateway, host=host,
                                           port=port, username=username,
                                           password_file=None if files else secret.resolve(),
                                           public_key=key, tls_ca=cfg.broker.tls_ca, tls=files))
    AuditLog(db).record(f"cli:{getpass.getuser()}", "broker.gateway.add", f"broker_user:{username}",
                        after={"store": args.store, "gateway": args.gateway,
                               "certificate_serial": None if files is None else f"{files.serial:x}"})
    print(f"registered {username}; wrote {wrote}: copy them to the gateway")
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
    ca_dir = Path(cfg.data_dir) / "ca"
    if not (ca_dir / "ca.key").exists() or not issued_serials(_ca(cfg), username):
        _audit_revoke(db, username, set())  # a password login: the registry is all
        print(f"revoked {username}")
        print(_apply(cfg, registry))
        return 0
    with tempfile.TemporaryDirectory(prefix="aislecast-revoke-") as tmp:
        _revoke_certs(cfg, db, registry, username, Path(tmp))
    return 0


def _revoke_certs(cfg: HqConfig, db: HqDb, registry: CredentialRegistry, username: str,
                  tmp: Path) -> None:
    """CRL (HQ's and the broker's copy), then the broker's reload, then the open session."""
    ca, b = _ca(cfg), cfg.broker
    broker_crl = [] if b.auth_dir is None else [BrokerAuthFiles(Path(b.auth_dir)).crl_path]
    ender = throwaway_certs(ca, username, tmp)
    serials = revoke_gateway_certs(ca, username, crl_copies=broker_crl, also=[ender.probe.serial])
    _audit_revoke(db, username, serials)
    listed = ", ".join(f"{n:x}" for n in sorted(serials))
    print(f"revoked {username} and its certificate(s) {listed}")
    print(_apply(cfg, registry))
    if not broker_crl or b.gateway_port is None:
        print("the broker refuses the certificate once it reloads the CRL (ca.crl); an open "
              "session is ended only where hq.toml sets [broker] auth_dir and gateway_port")
        return
    cafile = Path(b.tls_ca) if b.tls_ca else ca.cert_path
    try:
        waited = asyncio.run(end_gateway_session(ender, username, b.host, b.gateway_port, cafile))
    except (TimeoutError, aiomqtt.MqttError) as exc:
        raise AislecastError(f"the CRL is written but {username}'s open session could not be "
                             f"ended on {b.host}:{b.gateway_port}: {exc or 'timeout'}",
                             hint="check that the broker runs and reloads (pid_file)") from exc
    print(f"broker reloaded the CRL in {waited:.2f} s; {username}'s session ended")


def _audit_revoke(db: HqDb, username: str, serials: set[int]) -> None:
    AuditLog(db).record(f"cli:{getpass.getuser()}", "broker.gateway.revoke",
                        f"broker_user:{username}",
                        after={"revoked": True, "certificate_serials": sorted(f"{n:x}" for n in serials)})


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
    add.add_argument("--tls", action="store_true",
                     help="issue a client certificate from HQ's CA (DATA_DIR/ca) for the "
                          "broker's mutual-TLS listener instead of a password (the default "
                          "when hq.toml sets [broker] gateway_port)")
    ls = gsub.add_parser("list", help="list gateways' logins (never their passwords)",
                         description=_HELP, formatter_class=_RAW)
    ls.add_argument("--all", action="store_true", help="revoked ones too")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    for sp, fn in ((add, _add), (ls, _list), (rev, _revoke)):
        sp.add_argument("--config", metavar="FILE", help="hq.toml naming the database and broker")
        sp.add_argument("--db", metavar="URL", help="sqlite:///PATH or postgresql://... "
                        "(default: the one in --config, else sqlite:///hq-data/hq.sqlite)")
        sp.set_defaults(func=_run(fn))
