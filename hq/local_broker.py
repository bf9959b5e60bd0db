"""A broker on HQ's host with the product's TLS layout (the demo, tests, benchmarks).

:func:`tls_broker_config` makes (or reuses) HQ's private CA, a server certificate for
``localhost``/``127.0.0.1`` and the CRL, and returns the Mosquitto config that reads
HQ's password, ACL and CRL files (:class:`hq.broker_auth.BrokerAuthFiles`):

- ``gateway_tls_port``: mutual TLS; the client certificate's CN is the username and
  client id, checked against the CRL; gateways' certificates come from
  :func:`hq.gateway_certs.issue_gateway_cert`;
- ``phone_tls_port``: TLS with username/password, for phones and HQ itself;
- ``wss_port``: secure WebSockets with username/password, for browsers (the wallet);
  Mosquitto cannot ask for client certificates there, so no gateway uses it;
- ``port``: plain MQTT on 127.0.0.1 only. No component's traffic uses it: it is where
  :class:`~aislecast.kernel.broker.MosquittoProcess` sees that the broker is up (Mosquitto
  opens it last, after every TLS listener has loaded its certificates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aislecast.kernel.broker import BrokerConfig, ServerTls, free_ports
from hq.broker_auth import BrokerAuthFiles
from hq.gateway_certs import ensure_crl
from hq.pki import CertificateAuthority, init_ca, issue_server, load_ca

__all__ = ["LocalTlsBroker", "tls_broker_config"]

_HOSTS = ["localhost", "127.0.0.1"]


@dataclass(frozen=True, slots=True)
class LocalTlsBroker:
    ca: CertificateAuthority
    config: BrokerConfig

    @property
    def gateway_port(self) -> int:
        assert self.config.gateway_tls_port is not None
        return self.config.gateway_tls_port

    @property
    def phone_port(self) -> int:
        assert self.config.phone_tls_port is not None
        return self.config.phone_tls_port

    @property
    def browser_port(self) -> int:
        assert self.config.wss_port is not None
        return self.config.wss_port


def tls_broker_config(directory: Path, files: BrokerAuthFiles, ca_dir: Path) -> LocalTlsBroker:
    """The config of a broker in ``directory`` with HQ's files and the CA in ``ca_dir``
    (created there if missing). Blocking file and key work: call it off the event loop."""
    ca = load_ca(ca_dir) if (ca_dir / "ca.key").exists() else init_ca(
        ca_dir, common_name="aislecast HQ private CA")
    server = issue_server(ca, _HOSTS, stem="broker", out_dir=directory / "tls")
    ensure_crl(ca, files.crl_path)
    tls = ServerTls(ca.cert_path, server.cert_path, server.key_path, crlfile=files.crl_path)
    plain, gateway, phone, wss = free_ports(4)
    cfg = BrokerConfig(directory=directory, port=plain, tls=tls, gateway_tls_port=gateway,
                       phone_tls_port=phone, wss_port=wss,
                       password_file=files.password_path, acl_file=files.acl_path)
    return LocalTlsBroker(ca, cfg)
