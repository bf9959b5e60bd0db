"""The demo provisions its own HQ accounts at start: an admin with a token, one console
login per role (store staff scoped to the demo store), a wallet token for the
phones' enrolment and the approver's token (the flash scenario approves with it).
The live view and ``aislecast demo --json``'s first line show them, so the console
(``--http-port``) and the API can be tried by hand while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from hq.accounts import ROLES, Accounts
from hq.db import HqDb

__all__ = ["DemoCredentials", "provision"]


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    admin_token: str
    wallet_token: str
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (name, password)
    approver_token: str = ""  # demo-approver's: the flash scenario approves its proposal with it


def provision(db: HqDb, store: str) -> DemoCredentials:
    """Accounts for a fresh demo database (a rerun on the same one is refused by name)."""
    accounts = Accounts(db)
    logins: dict[str, tuple[str, str]] = {}
    for role in ROLES:
        name = f"demo-{role.replace('_', '-')}"
        stores = [store] if role == "store_staff" else None
        logins[role] = (name, accounts.add_user(name, role, stores=stores))
    _, admin = accounts.issue_token("personal", owner=logins["admin"][0], name="demo")
    _, wallet = accounts.issue_token("wallet", name="demo phones")
    _, approver = accounts.issue_token("personal", owner=logins["approver"][0], name="demo")
    return DemoCredentials(admin, wallet, logins, approver)
