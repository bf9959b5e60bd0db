"""``aislecast hq ca init``: HQ's private CA (hq.pki), and with ``--https`` HQ's own
HTTPS certificate from it."""

from __future__ import annotations

import argparse
import ipaddress
import textwrap
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from aislecast.apps.configfile import config_exit_code
from hq.config import HqConfig, load_hq_config
from hq.pki import init_ca, issue_server, load_ca

__all__ = ["HTTPS_STEM", "https_hosts", "register_ca"]

HTTPS_STEM: Final = "hq-https"  # DATA_DIR/ca/hq-https.crt and .key

_HELP = textwrap.dedent(
    """\
    HQ's private certificate authority in DATA_DIR/ca (ca.key 0600, ca.crt): it signs
    the broker's and gateways' TLS certificates and, with --https, HQ's own HTTPS
    certificate (hq-https.crt/.key) for the hosts phones, staff tools and gateways use:
    [http] public_base_url's host, 127.0.0.1, localhost and each --host. An existing CA
    is kept; the certificate is issued anew each time.

    Clients then verify HQ against ca.crt: aislecast phone enroll --hq-ca ca.crt,
    aislecast qr --hq-ca ca.crt, or AISLECAST_HQ_CA=ca.crt in their environment.

    examples:
      aislecast hq ca init --config hq.toml
      aislecast hq ca init --config hq.toml --https
      aislecast hq ca init --config hq.toml --https --host hq.internal --host 10.0.0.7
    """
)


def https_hosts(cfg: HqConfig, extra: list[str]) -> list[str]:
    """The names and addresses HQ's certificate is for, each once, in a stable order."""
    hosts: list[str] = []
    if cfg.http.public_base_url is not None:
        name = urlsplit(cfg.http.public_base_url).hostname
        if name:
            hosts.append(name)
    bind = cfg.http.host  # 0.0.0.0 and :: are no address a client can ask for
    if not (_is_ip(bind) and ipaddress.ip_address(bind).is_unspecified):
        hosts.append(bind)
    hosts += ["127.0.0.1", "localhost", *extra]
    return list(dict.fromkeys(hosts))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _init(args: argparse.Namespace) -> int:
    cfg = load_hq_config(args.config)
    ca_dir = Path(cfg.data_dir) / "ca"
    if (ca_dir / "ca.crt").exists():
        ca = load_ca(ca_dir)
        print(f"certificate authority in {ca_dir} exists; kept")
    else:
        ca = init_ca(ca_dir, common_name="aislecast HQ private CA")
        print(f"made the certificate authority in {ca_dir}")
    if args.https:
        hosts = https_hosts(cfg, args.host or [])
        issued = issue_server(ca, hosts, stem=HTTPS_STEM)
        print(f"HQ's HTTPS certificate for {', '.join(hosts)}: {issued.cert_path} (0600)")
        print(f'set in hq.toml [http]:\n  tls_cert = "{issued.cert_path}"\n'
              f'  tls_key = "{issued.key_path}"')
        print(f"clients verify HQ with {ca.cert_path} (--hq-ca, or AISLECAST_HQ_CA)")
    return 0


def register_ca(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = hsub.add_parser("ca", help="HQ's private certificate authority", description=_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = ca.add_subparsers(dest="ca_cmd", metavar="ACTION", required=True)
    init = csub.add_parser("init", help="make the CA (kept if it exists); --https: HQ's "
                                        "certificate", description=_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("--config", metavar="FILE", help="hq.toml (default: built-in defaults)")
    init.add_argument("--https", action="store_true",
                      help="also issue HQ's HTTPS certificate (DATA_DIR/ca/hq-https.crt/.key)")
    init.add_argument("--host", action="append", metavar="NAME",
                      help="another DNS name or IP address for HQ's certificate (repeatable)")
    init.set_defaults(func=config_exit_code(_init))
