"""``aislecast hq serve``: the central service (HTTP API, ingest, bundle signing)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import textwrap
from pathlib import Path

from aislecast.kernel.logs import setup_logging
from aislecast.kernel.mqtt import MqttSettings
from hq.server import LEARN_EVERY_S, HqServer

__all__ = ["register"]

_HELP = textwrap.dedent(
    """\
    Run HQ: the HTTP API and console, MQTT ingest (shared subscription, so several HQ
    workers split the load) and signed bundle publishing.

    examples:
      aislecast hq serve                                   # SQLite in ./hq-data
      aislecast hq serve --db postgresql://hq@db/aislecast --broker mqtt.internal:1883
      aislecast hq serve --http-port 8080 --key /etc/aislecast/hq-signing.pem
      aislecast hq serve --learn-every 300                 # retrain every 5 min

    Gateways pin HQ's public key: fetch it with  curl http://HQ:8080/api/keys/bundle
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hq", help="run the central service", description=_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    hsub = p.add_subparsers(dest="hq_cmd", metavar="ACTION", required=True)
    s = hsub.add_parser("serve", help="run HQ", description=_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--db", default="sqlite:///hq-data/hq.sqlite",
                   help="sqlite:///PATH or postgresql://... (default: %(default)s)")
    s.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the MQTT broker")
    s.add_argument("--http-host", default="127.0.0.1")
    s.add_argument("--http-port", type=int, default=8080)
    s.add_argument("--key", default="hq-data/hq-signing.pem",
                   help="Ed25519 signing key (PEM); created with mode 0600 if missing")
    s.add_argument("--worker", default="hq-1", help="MQTT client id of this HQ worker")
    s.add_argument("--learn-every", type=float, default=None, metavar="S",
                   help="retrain the ranking model, top up budget grants and republish "
                        "bundles every S seconds; 0 turns it off (default: 60)")
    s.add_argument("--log-level", default="info")
    s.add_argument("--log-json", action="store_true")
    s.set_defaults(func=_run)


async def _serve(args: argparse.Namespace) -> None:

    host, _, port = args.broker.rpartition(":")
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    server = HqServer(db_url=args.db, key_path=Path(args.key),
                      mqtt=MqttSettings(host=host or "127.0.0.1", port=int(port)),
                      http_host=args.http_host, http_port=args.http_port, client_id=args.worker,
                      learn_every_s=LEARN_EVERY_S if args.learn_every is None
                      else args.learn_every)
    await server.run()


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, json_lines=args.log_json)
    try:
        asyncio.run(_serve(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    return 0
