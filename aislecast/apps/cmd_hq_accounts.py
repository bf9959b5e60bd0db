"""``aislecast hq init``, ``hq users add|list|disable`` and ``hq tokens issue|list|revoke``:
HQ's accounts from the shell, on the database hq.toml names (``--config``) or ``--db``.

Every change is written to the audit log as ``cli:$USER``. Passwords and tokens are
printed once, when made; HQ keeps only their hashes (hq/accounts.py says which and why).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import textwrap
from pathlib import Path
from typing import Final

from aislecast.apps.configfile import add_init_arguments, write_starter
from aislecast.kernel.errors import AislecastError, ConfigError
from hq.accounts import KINDS, ROLES, AccountError, Accounts
from hq.audit import AuditLog
from hq.config import load_hq_config, starter_toml
from hq.credentials import HQ_LOGIN_FILE, CredentialRegistry, ensure_hq_credential
from hq.db import HqDb
from hq.pki import PkiError, init_ca

__all__ = ["register_accounts", "register_init"]

_RAW: Final = argparse.RawDescriptionHelpFormatter

_INIT_HELP = textwrap.dedent(
    """\
    Set up HQ: write the commented starter hq.toml if it is missing (database, broker,
    HTTP bind and body limit, public base URL, data dir), create the database with the
    first admin, make the private certificate authority under DATA_DIR/ca (kept if
    one exists) and register HQ's own broker login hq.1 (its password in a 0600 file
    next to the signing key; HQ registers it on first start otherwise). The admin's
    password is generated and printed once, unless you give --admin-password-file.
    --config-only writes just the file (an existing one is kept unless --force).

    examples:
      aislecast hq init                                    # ./hq.toml, admin "admin"
      aislecast hq init -o /etc/aislecast/hq.toml --admin ops \\
          --admin-password-file /root/hq-admin.secret
      aislecast hq init --config-only -o /etc/aislecast/hq.toml
      aislecast hq serve --config /etc/aislecast/hq.toml
    """
)

_USERS_HELP = textwrap.dedent(
    f"""\
    Console and API users. Roles: {", ".join(ROLES)}. store_staff are scoped to the
    stores given with --store; the others see every store. A new user's password is
    generated and printed once (or read from --password-file); disabling a user ends
    their sessions and stops their personal tokens at once.

    examples:
      aislecast hq users add maria --role marketer --config hq.toml
      aislecast hq users add lee --role store_staff --store store-1 --store store-2
      aislecast hq users list --json --db sqlite:///hq-data/hq.sqlite
      aislecast hq users disable lee
    """
)

_TOKENS_HELP = textwrap.dedent(
    f"""\
    API tokens for services and scripts, sent as 'Authorization: Bearer TOKEN'. Kinds:
    {", ".join(KINDS)}. A till token is scoped to --store; a personal token acts as
    --user with that user's role. The token is printed once: HQ keeps only its SHA-256.
    A running HQ stops accepting a revoked token within a second.

    examples:
      aislecast hq tokens issue --kind wallet --name phone-app
      aislecast hq tokens issue --kind till --store store-1 --expires-days 90
      aislecast hq tokens issue --kind personal --user maria --name laptop
      aislecast hq tokens issue --kind gateway_provisioning --json
      aislecast hq tokens list
      aislecast hq tokens revoke 3f9a0c12d4e5
    """
)


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="hq.toml naming the database")
    p.add_argument("--db", metavar="URL", help="sqlite:///PATH or postgresql://... "
                   "(default: the one in --config, else sqlite:///hq-data/hq.sqlite)")


def _open(args: argparse.Namespace) -> HqDb:
    cfg = load_hq_config(args.config, {"database.url": args.db} if args.db else None)
    return HqDb(cfg.db_url())


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _read_secret(path: str, flag: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(flag, f"cannot read {path}: {getattr(exc, 'strerror', exc)}",
                          hint="point it at a readable file with the password on line 1") from None
    if not lines or not lines[0]:
        raise ConfigError(flag, f"{path} is empty", hint="write the password on its first line")
    return lines[0]


def _run(action: str, args: argparse.Namespace) -> int:
    """One account action; bad input is one line on stderr and exit code 2."""
    try:
        return _ACTIONS[action](args)
    except (AccountError, ConfigError, PkiError) as exc:
        print(f"aislecast: error: {exc}", file=sys.stderr)
        return 2
    except AislecastError as exc:
        print(f"aislecast: error: {exc}", file=sys.stderr)
        return 1


def _add_user(args: argparse.Namespace, db: HqDb | None = None) -> int:
    db = db or _open(args)
    given = _read_secret(args.password_file, "--password-file") if args.password_file else None
    password = Accounts(db).add_user(args.name, args.role, password=given, stores=args.store)
    AuditLog(db).record(_actor(), "user.add", f"user:{args.name}",
                        after={"role": args.role, "stores": sorted(set(args.store))})
    print(f"added {args.role} {args.name!r}" + (f" for {', '.join(args.store)}" if args.store else ""))
    if given is None:
        print(f"password (shown once): {password}")
    return 0


def _list_users(args: argparse.Namespace) -> int:
    users = Accounts(_open(args)).users()
    if args.json:
        print(json.dumps([{"name": u.name, "role": u.role, "stores": u.stores,
                           "disabled": u.disabled, "created_at": u.created_at} for u in users]))
        return 0
    for u in users:
        state = "disabled" if u.disabled else "active"
        print(f"{u.name:<20} {u.role:<12} {state:<9} {','.join(u.stores)}")
    return 0


def _disable_user(args: argparse.Namespace) -> int:
    db = _open(args)
    Accounts(db).disable_user(args.name)
    AuditLog(db).record(_actor(), "user.disable", f"user:{args.name}", after={"disabled": True})
    print(f"disabled {args.name!r}: their sessions are closed and personal tokens refused")
    return 0


def _issue(args: argparse.Namespace) -> int:
    db = _open(args)
    ttl = None if args.expires_days is None else args.expires_days * 86_400.0
    tid, secret = Accounts(db).issue_token(args.kind, name=args.name or "", owner=args.user,
                                           stores=args.store, ttl_s=ttl)
    AuditLog(db).record(_actor(), "token.issue", f"token:{tid}",
                        after={"kind": args.kind, "name": args.name, "owner": args.user,
                               "stores": sorted(set(args.store))})
    if args.json:
        print(json.dumps({"id": tid, "kind": args.kind, "token": secret}))
    else:
        print(f"issued {args.kind} token {tid}; the token (shown once):\n{secret}")
    return 0


def _list_tokens(args: argparse.Namespace) -> int:
    for t in Accounts(_open(args)).tokens():
        state = "revoked" if t.revoked_at else "active"
        print(f"{t.id}  {t.kind:<21} {state:<8} {t.name:<16} {t.owner or ''} {','.join(t.stores)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    db = _open(args)
    Accounts(db).revoke_token(args.id)
    AuditLog(db).record(_actor(), "token.revoke", f"token:{args.id}", after={"revoked": True})
    print(f"revoked token {args.id}")
    return 0


def _init(args: argparse.Namespace) -> int:
    if args.config_only or args.output == "-" or not Path(args.output).exists():
        write_starter(starter_toml(), args.output, force=args.force,
                      check="aislecast hq serve --config {path}")
    if args.config_only or args.output == "-":
        return 0
    cfg = load_hq_config(args.output)
    db = HqDb(cfg.db_url())
    accounts = Accounts(db)
    if accounts.user(args.admin) is not None:
        print(f"admin {args.admin!r} exists in {db.safe_url}; kept")
    else:
        ns = argparse.Namespace(name=args.admin, role="admin", store=[],
                                password_file=args.admin_password_file)
        _add_user(ns, db)
    ca_dir = Path(cfg.data_dir) / "ca"
    if (ca_dir / "ca.crt").exists():
        print(f"certificate authority in {ca_dir} exists; kept")
    else:
        init_ca(ca_dir, common_name="aislecast HQ private CA")
        print(f"made the certificate authority in {ca_dir}")
    login = cfg.key_path().parent / HQ_LOGIN_FILE
    user, _ = ensure_hq_credential(CredentialRegistry(db), login)  # kept if still valid
    print(f"HQ's broker login {user}: password in {login} (0600)")
    print(f"next: aislecast hq serve --config {args.output}")
    return 0


_ACTIONS: Final = {"add": _add_user, "list": _list_users, "disable": _disable_user,
                   "issue": _issue, "tokens": _list_tokens, "revoke": _revoke, "init": _init}


def _bind(p: argparse.ArgumentParser, action: str) -> None:
    p.set_defaults(func=lambda args: _run(action, args))


def register_init(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = hsub.add_parser("init", help="write hq.toml, create the first admin and the CA",
                           description=_INIT_HELP, formatter_class=_RAW)
    init.add_argument("--config-only", action="store_true", help="only write the config file")
    add_init_arguments(init, "hq.toml")
    init.add_argument("--admin", default="admin", metavar="NAME",
                      help="the first admin's user name (default: %(default)s)")
    init.add_argument("--admin-password-file", metavar="FILE",
                      help="read the admin's password from FILE's first line instead of "
                           "generating one")
    _bind(init, "init")


def register_accounts(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = hsub.add_parser("users", help="add, list and disable users", description=_USERS_HELP,
                            formatter_class=_RAW)
    usub = users.add_subparsers(dest="users_cmd", metavar="ACTION", required=True)
    add = usub.add_parser("add", help="add a user", description=_USERS_HELP, formatter_class=_RAW)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--store", action="append", default=[], metavar="STORE",
                     help="a store this store_staff user works in (repeat for several)")
    add.add_argument("--password-file", metavar="FILE",
                     help="the password on FILE's first line (default: generate one)")
    ls = usub.add_parser("list", help="list users", description=_USERS_HELP, formatter_class=_RAW)
    ls.add_argument("--json", action="store_true", help="one JSON array")
    dis = usub.add_parser("disable", help="disable a user", description=_USERS_HELP,
                          formatter_class=_RAW)
    dis.add_argument("name", metavar="NAME")
    for p, action in ((add, "add"), (ls, "list"), (dis, "disable")):
        _db_args(p)
        _bind(p, action)

    tokens = hsub.add_parser("tokens", help="issue, list and revoke API tokens",
                             description=_TOKENS_HELP, formatter_class=_RAW)
    tsub = tokens.add_subparsers(dest="tokens_cmd", metavar="ACTION", required=True)
    issue = tsub.add_parser("issue", help="issue a token (printed once)", description=_TOKENS_HELP,
                            formatter_class=_RAW)
    issue.add_argument("--kind", required=True, choices=KINDS)
    issue.add_argument("--name", help="what it is for, e.g. till-3 (default: the kind)")
    issue.add_argument("--user", metavar="NAME", help="the owner of a personal token")
    issue.add_argument("--store", action="append", default=[], metavar="STORE",
                       help="the store a till token is for (repeat for several)")
    issue.add_argument("--expires-days", type=float, metavar="DAYS",
                       help="refuse it after DAYS days (default: until revoked)")
    issue.add_argument("--json", action="store_true",
                       help='print {"id": ..., "kind": ..., "token": ...}')
    tls = tsub.add_parser("list", help="list tokens (never their secrets)",
                          description=_TOKENS_HELP, formatter_class=_RAW)
    rev = tsub.add_parser("revoke", help="revoke a token", description=_TOKENS_HELP,
                          formatter_class=_RAW)
    rev.add_argument("id", metavar="ID", help="the id `tokens issue` or `tokens list` printed")
    for p, action in ((issue, "issue"), (tls, "tokens"), (rev, "revoke")):
        _db_args(p)
        _bind(p, action)
