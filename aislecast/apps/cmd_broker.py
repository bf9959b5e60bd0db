"""``aislecast broker sync``: a broker on another host follows HQ's credential registry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import textwrap
from pathlib import Path

from aislecast.apps.broker_follow import PidSource, RegistryFollower, SyncFailed
from aislecast.apps.configfile import config_exit_code
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.logs import get_logger, setup_logging
from aislecast.kernel.notify import Notifier
from aislecast.kernel.privatefile import read_secret
from hq.broker_auth import BrokerAuthFiles
from hq.broker_sync import pid_from_file

__all__ = ["register"]

log = get_logger(__name__)

_HELP = textwrap.dedent(
    """\
    Run next to a Mosquitto that HQ cannot reach by file: fetch the broker's password
    file (hashes only) and ACL from HQ's GET /api/broker/registry, write them to
    OUT/passwords and OUT/acl (atomically, 0600; point the broker's password_file and
    acl_file there) and SIGHUP the broker when they change. It long-polls HQ, so a
    revoked login is dropped by the broker about a second after HQ revokes it. While HQ
    is unreachable the files stay as they are and it retries with jittered backoff.
    Counters (last success time, failures, reloads) go to --metrics-file in Prometheus
    text format after every attempt. The token is a broker_sync service token:
      aislecast hq tokens issue --kind broker_sync --name broker-eu-1

    examples:
      aislecast broker sync --hq https://hq.example.com --token-file /etc/aislecast/sync.token \\
          --out /etc/mosquitto/aislecast --pid-file /run/mosquitto/mosquitto.pid
      aislecast broker sync --hq https://hq.example.com --token-file t --out d --once
    """
)


def _pid_source(args: argparse.Namespace) -> tuple[str, PidSource | None]:
    if args.pid_file is not None:
        return f"pid file {args.pid_file}", pid_from_file(Path(args.pid_file))
    if args.pid is not None:
        if args.pid <= 1:
            raise ConfigError("--pid", f"{args.pid} is not a broker's process id",
                              hint="pass Mosquitto's pid, or --pid-file /run/mosquitto/mosquitto.pid")
        pid = int(args.pid)
        return f"pid {pid}", lambda: pid
    return "no reload (neither --pid-file nor --pid)", None


def _follower(args: argparse.Namespace) -> RegistryFollower:
    if not args.hq.startswith(("https://", "http://")):
        raise ConfigError("--hq", f"{args.hq!r} is not an http(s) URL",
                          hint="e.g. --hq https://hq.example.com")
    token = read_secret(args.token_file, "--token-file")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is not a directory", hint="name the broker's auth directory")
    _, pid = _pid_source(args)
    metrics = Path(args.metrics_file) if args.metrics_file else out / "broker-sync.prom"
    verify: str | bool = args.ca if args.ca is not None else True
    if args.ca is not None and not Path(args.ca).is_file():
        raise ConfigError("--ca", f"{args.ca} is not a file",
                          hint="a PEM file of the CA that signed HQ's certificate")
    if not 0 < args.long_poll <= 55:
        raise ConfigError("--long-poll", f"{args.long_poll:g} s is out of range",
                          hint="use 1 to 55 seconds")
    return RegistryFollower(args.hq, token, BrokerAuthFiles(out), pid=pid,
                            metrics_file=metrics, long_poll_s=args.long_poll, verify=verify)


async def _once(f: RegistryFollower) -> int:
    async with f.client() as http:
        try:
            changed = await f.sync_once(http)
        except SyncFailed as exc:
            f.stats.failures += 1
            await asyncio.to_thread(f.write_metrics)
            print(f"aislecast broker sync: error: {exc}", file=sys.stderr)
            return 1
    await asyncio.to_thread(f.write_metrics)
    print(f"{'updated' if changed else 'unchanged'}: {f.stats.users:.0f} users, version {f.version}"
          + (f", broker reloaded ({f.stats.reloads} SIGHUP)" if f.stats.reloads else ""))
    return 0


async def _forever(f: RegistryFollower) -> None:
    """The follower and systemd's watchdog in one TaskGroup; SIGTERM cancels both. The
    watchdog is fed from this loop only: HQ being down is not a reason to restart (the
    files on disk stay valid), a wedged loop is."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with Notifier() as notify:
        status = f"following {f.hq_url} into {f.files.directory}"
        await notify.ready(status)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(f.run(), name="broker-sync")
                tg.create_task(notify.watchdog(lambda: None, healthy_status=lambda: status),
                               name="broker-sync-watchdog")
        finally:
            await notify.stopping()


def _sync(args: argparse.Namespace) -> int:
    f = _follower(args)  # before the loop: a bad flag is exit 2, not a crash
    setup_logging(args.log_level, json_lines=args.log_json)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per long poll otherwise
    if args.once:
        return asyncio.run(_once(f))
    log.info("broker sync started", hq=f.hq_url, out=str(f.files.directory),
             reload=_pid_source(args)[0])
    try:
        asyncio.run(_forever(f))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="keep a broker on another host in step with HQ",
                       description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="broker_cmd", metavar="ACTION", required=True)
    s = bsub.add_parser("sync", help="follow HQ's credential registry into the broker's files",
                        description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--hq", required=True, metavar="URL", help="HQ's base URL, e.g. https://hq.example.com")
    s.add_argument("--token-file", required=True, metavar="FILE",
                   help="a file whose first line is a broker_sync token")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="the broker's auth directory: DIR/passwords and DIR/acl are written")
    pid = s.add_mutually_exclusive_group()
    pid.add_argument("--pid-file", metavar="FILE", help="Mosquitto's pid_file, for the SIGHUP")
    pid.add_argument("--pid", type=int, metavar="N", help="Mosquitto's process id, for the SIGHUP")
    s.add_argument("--once", action="store_true",
                   help="fetch once, write and reload if changed, exit (0 ok, 1 HQ failed)")
    s.add_argument("--ca", metavar="FILE", help="PEM CA that signed HQ's certificate (default: the system's)")
    s.add_argument("--metrics-file", metavar="FILE",
                   help="Prometheus text file of the counters (default: DIR/broker-sync.prom)")
    s.add_argument("--long-poll", type=float, default=25.0, metavar="S",
                   help="seconds HQ may hold each request (default: %(default)s, at most 55)")
    s.add_argument("--log-level", default="info")
    s.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    s.set_defaults(func=config_exit_code(_sync))
