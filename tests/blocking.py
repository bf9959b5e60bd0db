"""What may block the event loop in tests, and why: blockbuster's allow-list.

The autouse fixture in conftest.py runs every test under ``blockbuster_ctx`` scanning our
packages: a blocking call (file, socket, SQLite, sleep, lock) made on the running loop
from aislecast/, edge/, gateway/, hq/ or firmware_config/ fails the test with
``BlockingError``. The call sites below block on purpose, or are known and recorded;
each entry names the file and functions, as blockbuster's ``can_block_in`` takes them.
A new blocking call anywhere else fails its test: move it off the loop
(``asyncio.to_thread``) or, if it is deliberate, add it here with the reason.
"""

from __future__ import annotations

from typing import Final

from blockbuster import BlockBuster

__all__ = ["ANYWHERE", "SCANNED", "SQLITE_INLINE", "allow_known_blocking"]

SCANNED: Final = ["aislecast", "edge", "gateway", "hq", "firmware_config"]

# (file suffix, functions): may make any blocking call.
ANYWHERE: Final[list[tuple[str, set[str]]]] = [
    # An import reads .py/.pyc files; it happens once per process, so without this the
    # first test to reach a lazy import would fail and the rest would not (order-dependent).
    ("<frozen importlib._bootstrap>", {"_find_and_load"}),
    # stdlib logging writes to its stream synchronously (stderr: journald under systemd),
    # and formatting an exception reads source lines through linecache. Recorded, not a
    # bug today: a QueueHandler would take it off the loop if logging ever got heavy.
    ("logging/__init__.py", {"callHandlers"}),
    # The zone database is read from disk the first time a zone is used, then cached by
    # zoneinfo (store time zones at HQ, campaign time zones at the gateway).
    ("zoneinfo/_common.py", {"load_data"}),
    ("zoneinfo/_tzpath.py", {"find_tzfile"}),
    # HQ's list of valid zone names, walked on disk once, then cached (hq/service.py)
    ("hq/service.py", {"_zones"}),
    # Start-up I/O, once per process before it serves: the broker's config and log
    # files and its spawn, the HQ signing key, the console's page, data directories.
    # Recorded for issue 9's composition roots (no I/O in __init__; async setup).
    ("aislecast/kernel/broker.py", {"__aenter__", "mosquitto_binary", "_write_passwords"}),
    ("aislecast/kernel/signing.py", {"load_or_create_signing_key"}),
    ("hq/console.py", {"mount_console"}),
    ("hq/docs_page.py", {"mount_docs"}),  # Swagger UI's directory, checked once
    ("hq/login.py", {"login_router"}),
    ("hq/db.py", {"_connect"}),
    ("gateway/app.py", {"__init__"}),
    # One-shot administration and start-up I/O: the private CA and key files (the CLI,
    # HQ's start, which runs in a worker thread), config files read before a process
    # serves. Tests call them from async fixtures, on the loop.
    ("hq/pki.py", {"init_ca", "load_ca", "issue_server", "issue_client", "build_crl"}),
    ("hq/gateway_certs.py", {"issue_gateway_cert", "revoke_gateway_certs", "ensure_crl"}),
    ("aislecast/kernel/privatefile.py", {"write_private", "check_tls_files"}),
    # The pseudonym day keys (gateway/pseudonyms.py): a 32-byte 0600 file written, and
    # the key of the day before yesterday overwritten and unlinked, once a day on the loop.
    ("gateway/pseudonyms.py", {"__init__", "_load_or_create", "_destroy", "has_life_key"}),
    ("aislecast/kernel/config.py", {"read_toml", "load_toml"}),
    ("aislecast/kernel/broker_login.py", {"secret"}),  # HQ reads its password_file at start
    # Libraries' own first-use reads, cached afterwards: the system MIME table (the
    # console's static files), sqlite-utils' plugin entry points (pluggy) when a
    # database is first wrapped.
    ("mimetypes.py", {"init"}),
    ("pluggy/_manager.py", {"load_setuptools_entrypoints"}),
    # The NFC card emulator (tests and benchmarks only) runs nfcpy on its own thread;
    # leaving it joins that thread, which blocks only if a card is mid-exchange.
    ("edge/nfc/emulator.py", {"__enter__", "__exit__"}),
    # /proc reads of a few hundred bytes for the demo's and benchmarks' RSS line.
    ("aislecast/kernel/procinfo.py", {"rss_mib"}),
    # `aislecast doctor` is a one-shot command: its checks stat files and the disk.
    ("aislecast/apps/cmd_doctor.py", {"_check_bluez_version", "_check_clock", "_check_disk"}),
]

# (file suffix, functions): may call sqlite3 on the loop, by design. The gateway has one
# SQLite connection written inline on the loop (docs/architecture.md#storage: one writer; a commit in
# WAL mode without fsync is tens of microseconds, cheaper than a thread hop per event);
# the checkpoint (the fsync) runs in a thread. HQ's SQLite layer is inline too; its long
# scans go through HqDb.offload, a worker thread.
SQLITE_INLINE: Final[list[tuple[str, set[str]]]] = [
    # migrations run once when the database is opened (the gateway opens it in a thread)
    ("gateway/storage.py", {"open_db", "migrate", "schema_version"}),
    ("hq/migrations.py", {"migrate", "schema_version"}),
    ("gateway/outbox.py", {"open_db", "__init__", "add", "after", "pending", "_delete",
                           "_insert_offers", "drop_expired", "checkpoint", "__len__"}),
    ("gateway/bundles.py", {"__init__", "_apply", "load_persisted", "offer_delta"}),
    # cap charges ride in the outbox's group commit (PendingWrites.write inside add);
    # peers' charges are one small transaction per batch; once a day (_advance) one DELETE
    # of the rows under the day key that went, and the counts re-read from the rest
    ("gateway/caps.py", {"__init__", "_restore", "flush", "_write", "commit_remote", "prune",
                         "_advance"}),
    ("gateway/visits.py", {"__init__", "_restore", "_heartbeat", "_write"}),
    # consent deltas purge an erased shopper inside offer_delta; retention (every 10 min):
    # a few DELETEs by indexed or small tables (gateway.consent, gateway.retention)
    ("gateway/retention.py", {"purge"}),
    ("gateway/consent.py", {"purge"}),
    ("hq/db.py", {"execute", "executemany", "insert_rows", "pipelined", "query", "transaction"}),
]


def allow_known_blocking(bb: BlockBuster) -> None:
    """Apply the two lists above to an activated :class:`BlockBuster`."""
    for name, fn in bb.functions.items():
        for filename, functions in ANYWHERE:
            fn.can_block_in(filename, functions)
        if name.startswith("sqlite3."):
            for filename, functions in SQLITE_INLINE:
                fn.can_block_in(filename, functions)
