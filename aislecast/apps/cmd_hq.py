"""``aislecast hq serve`` and ``aislecast hq init``: the central service and its config."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import textwrap
from pathlib import Path
from typing import Final

from aislecast.apps.cmd_hq_accounts import register_accounts, register_init
from aislecast.apps.cmd_hq_ca import register_ca
from aislecast.apps.cmd_hq_gateways import register_gateways
from aislecast.apps.cmd_hq_keys import register_keys
from aislecast.apps.configfile import CONFIG_EXIT, config_exit_code
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.logs import setup_logging
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.notify import Notifier
from hq.broker_sync import pid_from_file
from hq.config import HqConfig, load_hq_config
from hq.leader import WorkerRefused
from hq.server import HqServer
from hq.shards import ShardSettings

__all__ = ["register"]

_HELP = textwrap.dedent(
    """\
    Run HQ: the HTTP API and console, MQTT ingest (shared subscription, so several HQ
    workers split the load) and signed bundle publishing.

    Settings come from --config hq.toml if given (`aislecast hq init` writes a commented
    one), else from the defaults; each flag below overrides its one setting.

    examples:
      aislecast hq serve                                   # SQLite in ./hq-data
      aislecast hq serve --config /etc/aislecast/hq.toml
      aislecast hq serve --config hq.toml --http-port 8081 # the file, one setting changed
      aislecast hq serve --db postgresql://hq@db/aislecast --broker mqtt.internal:1883
      aislecast hq serve --http-port 8080 --key /etc/aislecast/hq-signing.pem
      aislecast hq serve --learn-every 300                 # retrain every 5 min
      aislecast hq serve --config hq.toml --worker 2       # a second worker (PostgreSQL)

    Every /api call needs a token (aislecast hq tokens issue) or a console login.
    Gateways pin HQ's public key: fetch it with
      curl -H "Authorization: Bearer $TOKEN" http://HQ:8080/api/keys/bundle
    HTTPS: [http] tls_cert and tls_key in hq.toml (aislecast hq ca init --https issues
    them); behind a reverse proxy, [http] trusted_proxies names it. Signing keys rotate
    with aislecast hq keys next|rotate|retire.
    Several workers on one PostgreSQL database all ingest and serve HTTP; the one holding
    the database's leader lock publishes bundles and trains (/metrics: leader_leader).
    A second worker on one SQLite file is refused (exit 2).
    A config that does not load is one line naming the setting and the fix, exit code 2.
    """
)

# flag -> the setting it overrides (dotted, as in hq.toml)
_FLAGS: Final = {
    "db": "database.url",
    "http_host": "http.host",
    "http_port": "http.port",
    "public_url": "http.public_base_url",
    "key": "signing_key",
    "worker": "broker.worker",
    "learn_every": "learn_every_s",
    "log_level": "log_level",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hq", help="run the central service", description=_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    hsub = p.add_subparsers(dest="hq_cmd", metavar="ACTION", required=True)
    s = hsub.add_parser("serve", help="run HQ", description=_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", metavar="FILE", help="hq.toml (default: none, built-in defaults)")
    s.add_argument("--db", help="sqlite:///PATH or postgresql://... "
                                "(default: sqlite:///hq-data/hq.sqlite, under data_dir)")
    s.add_argument("--broker", metavar="HOST[:PORT]",
                   help="the MQTT broker (default: 127.0.0.1:1883)")
    s.add_argument("--http-host", help="address to bind (default: 127.0.0.1)")
    s.add_argument("--http-port", type=int, help="(default: 8080)")
    s.add_argument("--public-url", metavar="URL",
                   help="HQ's public address for short links and labels, e.g. https://hq.example.com "
                        "(default: the address each request came to)")
    s.add_argument("--key", help="Ed25519 signing key (PEM); created with mode 0600 if missing "
                                 "(default: hq-data/hq-signing.pem, under data_dir)")
    s.add_argument("--worker", metavar="NAME",
                   help="this HQ worker's name, unique per worker on one database: it logs in "
                        "as hq.NAME, MQTT client id hq-NAME (default: 1)")
    s.add_argument("--learn-every", type=float, default=None, metavar="S",
                   help="retrain the ranking model, top up budget grants and republish "
                        "bundles every S seconds; 0 turns it off (default: 60)")
    s.add_argument("--log-level", type=str.lower, help="debug, info, warning or error (default: info)")
    s.add_argument("--log-json", action="store_true")
    s.set_defaults(func=config_exit_code(_run))
    register_init(hsub)
    register_accounts(hsub)
    register_gateways(hsub)
    register_keys(hsub)
    register_ca(hsub)


def _overrides(args: argparse.Namespace) -> dict[str, tuple[str, object]]:
    """The settings the flags given override: dotted name -> (flag, value)."""
    out = {name: (f"--{flag.replace('_', '-')}", getattr(args, flag))
           for flag, name in _FLAGS.items() if getattr(args, flag) is not None}
    if args.broker is not None:
        host, colon, port = args.broker.rpartition(":")
        if not colon:
            host, port = args.broker, ""
        if port and not port.isdecimal():
            raise ConfigError("--broker", f"{args.broker!r} is not HOST:PORT",
                              hint="e.g. --broker mqtt.internal:1883")
        out["broker.host"] = ("--broker", host or "127.0.0.1")
        if port:
            out["broker.port"] = ("--broker", int(port))
    return out


def load(args: argparse.Namespace) -> HqConfig:
    """hq.toml (if --config) with the flags over it; a bad flag value names the flag."""
    overrides = _overrides(args)
    try:
        return load_hq_config(args.config, {name: value for name, (_, value) in overrides.items()})
    except ConfigError as exc:
        if exc.field not in overrides:
            raise
        raise ConfigError(overrides[exc.field][0], exc.problem, hint=exc.fix) from None


async def _serve(cfg: HqConfig, mqtt: MqttSettings, shards: list[ShardSettings]) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    b = cfg.broker
    server = HqServer(db_url=cfg.db_url(), key_path=cfg.key_path(), mqtt=mqtt,
                      http_host=cfg.http.host, http_port=cfg.http.port,
                      client_id=b.mqtt_client_id(), worker=b.worker, learn_every_s=cfg.learn_every_s,
                      public_base_url=cfg.http.public_base_url, landing_hosts=cfg.links.hosts(),
                      max_body_bytes=cfg.http.max_body_bytes,
                      broker_auth_dir=None if b.auth_dir is None else Path(b.auth_dir),
                      broker_pid=None if b.pid_file is None else pid_from_file(Path(b.pid_file)),
                      tls_cert=None if cfg.http.tls_cert is None else Path(cfg.http.tls_cert),
                      tls_key=None if cfg.http.tls_key is None else Path(cfg.http.tls_key),
                      trusted_proxies=cfg.http.trusted_proxies,
                      shards=shards, retention_days=cfg.retention.events_days,
                      approval=cfg.approval, feeds=cfg.feeds,
                      wallet_broker_url=cfg.http.wallet_broker_url, passes=cfg.passes)
    # systemd (Type=notify): READY once HTTP listens and the broker accepted HQ; the
    # watchdog is fed from this loop, so a blocked loop stops it; STOPPING on SIGTERM
    async with Notifier() as notify, server:
        status = f"serving {server.scheme}://{cfg.http.host}:{server.http_port}, broker {b.host}:{b.port}"
        await notify.ready(status)
        try:
            await notify.watchdog(lambda: None, healthy_status=lambda: status)
            await asyncio.Event().wait()
        finally:
            await notify.stopping()


def _run(args: argparse.Namespace) -> int:
    cfg = load(args)  # before the loop: a bad file or flag is exit 2, not a crash
    mqtt = cfg.mqtt_settings()  # reads broker.password_file
    shards = cfg.shard_settings()  # and each shard's
    setup_logging(cfg.log_level, json_lines=args.log_json)
    try:
        asyncio.run(_serve(cfg, mqtt, shards))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    except WorkerRefused as exc:
        print(f"aislecast: error: {exc}", file=sys.stderr)
        return CONFIG_EXIT
    return 0
