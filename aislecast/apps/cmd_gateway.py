"""``aislecast gateway run``: the store gateway daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import textwrap
import time

import msgspec

from aislecast.apps.configfile import add_init_arguments, config_exit_code, write_starter
from aislecast.kernel.logs import setup_logging
from aislecast.kernel.notify import Notifier
from edge.factory import make_scanner
from gateway.app import Gateway
from gateway.config import GatewayConfig, load_config, starter_toml
from gateway.health import HEALTHY, observe, verdict
from gateway.report import NoReport, read_report, report_path

__all__ = ["register"]

_HELP = textwrap.dedent(
    """\
    Run the store gateway: scanner -> presence -> decisions -> MQTT, until SIGTERM/Ctrl-C.

    examples:
      aislecast gateway init -o /etc/aislecast/gateway.toml  # a commented starter file
      aislecast gateway check --config gw.toml              # validate the config, then exit
      aislecast gateway run --config /etc/aislecast/gateway.toml
      aislecast gateway run --config gw.toml --log-json     # JSON log lines for journald

    A minimal gateway.toml (`gateway init` writes every setting, commented):
      gateway = "gw-1"
      store = "store-1"
      hq_public_key = "/etc/aislecast/hq.pub.pem"
      data_dir = "/var/lib/aislecast"
      [broker]
      host = "mqtt.example.internal"
      port = 1883
      [scanner]
      backend = "bluez"
      adapter = "hci0"
      [scanner.receivers]
      hci0 = "entrance"
      [metrics]
      port = 9108            # Prometheus metrics on 127.0.0.1:9108 (optional)

    A config that does not load is one line naming the setting and the fix, exit code 2.
    """
)

_INIT_HELP = textwrap.dedent(
    """\
    Write a commented starter gateway.toml: every setting with its default and what it
    means. It loads as written; set gateway, store, hq_public_key and the scanner, then
    check it. An existing file is kept unless --force is given.

    examples:
      aislecast gateway init                                # ./gateway.toml
      aislecast gateway init -o /etc/aislecast/gateway.toml
      aislecast gateway init -o - | less                    # read it first
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gateway", help="run or check the store gateway", description=_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = p.add_subparsers(dest="gateway_cmd", metavar="ACTION", required=True)
    run = gsub.add_parser("run", help="run the daemon", description=_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", required=True, help="gateway TOML file")
    run.add_argument("--log-level", default="info")
    run.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    run.set_defaults(func=config_exit_code(_run))
    chk = gsub.add_parser("check", help="validate a config file and exit (2: it does not load)")
    chk.add_argument("--config", required=True)
    chk.set_defaults(func=config_exit_code(_check))
    init = gsub.add_parser("init", help="write a commented starter config file",
                           description=_INIT_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_init_arguments(init, "gateway.toml")
    init.set_defaults(func=config_exit_code(_init))
    hl = gsub.add_parser(
        "health", help="judge the running gateway's health on its host (exit 0 healthy, "
                       "1 unhealthy, 2 no report, 3 warning)",
        description="Read the state report the running gateway writes to DATA_DIR/state.json "
        "(on this host, as its user or group; it never logs in to the broker, so it cannot "
        "disturb the gateway) and judge it: unhealthy (1) when the broker refused the "
        "gateway's login, the gateway stopped or its report is stale, the scanner never "
        "started or has been silent past [scanner] silent_after_s, or the broker refused its "
        "publishes; no report (2) when there is no report file or the gateway cannot reach "
        "the broker; a warning (3) when it has no bundle a minute after connecting, with the "
        "likely cause. A verdict other than healthy is one line on stderr.\n\nexamples:\n"
        "  aislecast gateway health --config /etc/aislecast/gateway.toml\n"
        "  aislecast gateway health --config gw.toml --json | jq .state.metrics.publisher_offers_published",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    hl.add_argument("--config", required=True)
    hl.add_argument("--json", action="store_true", help="print the whole report as JSON")
    hl.add_argument("--timeout", type=float, default=5.0,
                    help="seconds to wait for a report file to appear (a gateway just started)")
    hl.set_defaults(func=config_exit_code(_health))
    hd = gsub.add_parser(
        "heard", help="write what the running gateway hears as HEARD.json for `beacons check`",
        description="Read the running gateway's state report (DATA_DIR/state.json, as for "
        "`gateway health`) and write its planned beacons that it hears (RSSI, last seen, TLM "
        "battery; receiver is the gateway's name) in the HEARD.json format of `aislecast "
        "beacons check --heard`. Beacons never heard are left out, so the check calls them "
        "missing. Exit 2 when there is no report.\n\nexamples:\n"
        "  aislecast gateway heard --config gw.toml --out heard.json\n"
        "  aislecast beacons check --plan plan.json --heard heard.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    hd.add_argument("--config", required=True)
    hd.add_argument("--out", required=True, metavar="HEARD.json", help="the file to write")
    hd.set_defaults(func=config_exit_code(_heard))


def _init(args: argparse.Namespace) -> int:
    return write_starter(starter_toml(), args.output, force=args.force,
                         check="aislecast gateway check --config {path}")


def _health(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    seen = observe(cfg, args.timeout)
    state = None if isinstance(seen, NoReport) else seen.state
    v = verdict(seen, cfg, time.time())
    if args.json:
        print(json.dumps({"verdict": v.reason, "code": v.code,
                          "report": None if isinstance(seen, NoReport) else msgspec.to_builtins(seen),
                          "state": None if state is None else msgspec.to_builtins(state)}))
    elif v.code != HEALTHY:  # one line, on stderr, for a person or a monitoring check
        print(f"aislecast: {cfg.gateway} ({cfg.store}): {v.reason}", file=sys.stderr)
    else:
        print(f"{cfg.gateway} ({cfg.store}): {v.reason}")
        if state is not None:
            m = state.metrics
            print(f"  bundle v{state.bundle_version}, shoppers present {m.get('shoppers_present', 0):.0f}, "
                  f"offers published {m.get('publisher_offers_published', 0):.0f}, "
                  f"outbox {m.get('outbox_rows', 0):.0f}, mqtt connects {m.get('mqtt_connects', 0):.0f}")
    return v.code


def _heard(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    seen = read_report(report_path(cfg))
    if isinstance(seen, NoReport):
        print(f"aislecast: error: {seen.reason}", file=sys.stderr)
        return 2
    st = seen.state
    rows = [{"beacon": b.id, "receiver": cfg.gateway, "rssi": b.rssi,
             "last_seen": round(st.ts - b.last_seen_age_s, 1)}
            | ({} if b.battery_mv is None else {"battery_mv": b.battery_mv})
            for b in st.beacons or [] if b.rssi is not None and b.last_seen_age_s is not None]
    try:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    except OSError as exc:
        print(f"aislecast: error: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} heard beacons of {len(st.beacons or [])} reported "
          f"({st.beacons_omitted} past the report's cap) to {args.out}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    cfg.public_keys()
    print(f"ok: gateway {cfg.gateway} of store {cfg.store}, scanner {cfg.scanner.backend}, "
          f"broker {cfg.broker.host}:{cfg.broker.port}")
    return 0


async def _serve(cfg: GatewayConfig) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    sc = cfg.scanner
    gw = Gateway(cfg, lambda cb: make_scanner(sc.backend, cb, adapter=sc.adapter, mode=sc.mode,
                                              sim_seed=sc.sim_seed),
                 metrics_port=cfg.metrics_port, notifier=Notifier())  # NOTIFY_SOCKET, if any
    await gw.run()


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # before the loop: a bad file is exit 2, not a crash
    setup_logging(args.log_level, json_lines=args.log_json)
    try:
        asyncio.run(_serve(cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    return 0
