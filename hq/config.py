"""HQ's configuration (``hq.toml``), loaded by :mod:`aislecast.kernel.config`.

``aislecast hq serve`` runs with no file at all (every setting has a default: SQLite
and the signing key under ``./hq-data``, broker and HTTP on 127.0.0.1); ``--config
hq.toml`` sets them from a file and the command's flags override single settings.
``aislecast hq init --config-only`` writes the commented starter (hq/starter.toml,
also examples/hq.toml)::

    data_dir = "/var/lib/aislecast-hq"
    [database]
    url = "postgresql://hq@db.internal/aislecast"
    [broker]
    host = "mqtt.internal"
    username = "hq"
    password_file = "/etc/aislecast/hq-mqtt.secret"
    tls_ca = "/etc/aislecast/broker-ca.pem"
    gateway_port = 8884                     # mutual TLS: gateways get certificates
    auth_dir = "/etc/mosquitto/aislecast"   # or, on the broker's host: HQ writes the files
    pid_file = "/run/mosquitto/mosquitto.pid"
    [http]
    public_base_url = "https://hq.example.com"
    tls_cert = "/etc/aislecast/hq-https.crt"   # aislecast hq ca init --https
    tls_key = "/etc/aislecast/hq-https.key"
    [links]
    landing_hosts = ["shop.example.com", "recipes.example.com"]
    [[shards]]                               # stores on a second broker (hq.shards)
    name = "b"
    host = "mqtt-b.internal"
    stores = ["store-b", "store-c"]
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from aislecast.kernel.broker_login import BrokerLogin
from aislecast.kernel.config import TcpPort, decode, read_toml
from aislecast.kernel.const import MQTT_SESSION_EXPIRY_S
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from hq.api import MAX_BODY_BYTES
from hq.approvals import ApprovalPolicy
from hq.broker_sync import pid_from_file
from hq.feed_rules import FeedSettings
from hq.landing import LandingHosts
from hq.passes import PassSettings, check_passes
from hq.retention import EVENTS_DAYS
from hq.server import LEARN_EVERY_S
from hq.shards import DEFAULT_SHARD, ShardSettings

__all__ = [
    "DatabaseSection",
    "HqBrokerSection",
    "HqConfig",
    "HttpSection",
    "LinksSection",
    "ShardSection",
    "load_hq_config",
    "starter_toml",
]

_CREATE: Final = "aislecast hq init --config-only -o {path}"


class DatabaseSection(msgspec.Struct, forbid_unknown_fields=True):
    # None: SQLite at DATA_DIR/hq.sqlite
    url: Annotated[str, Meta(
        pattern=r"^(sqlite:///|postgresql://|postgres://)\S+\Z",
        description="sqlite:///PATH or postgresql://USER@HOST/DB")] | None = None


class HqBrokerSection(BrokerLogin):
    """``[broker]``: the login (:class:`~aislecast.kernel.broker_login.BrokerLogin`;
    HQ logs in as hq.{worker}), and what only HQ needs: its worker name and session, the
    gateways' mutual-TLS port, and where the broker's password/ACL files live."""

    # The broker's mutual-TLS listener for gateways, on ``host``: `hq gateways add` then
    # issues each gateway a client certificate from HQ's CA (DATA_DIR/ca) and points its
    # gateway.toml here; None: gateways get a password login on ``port``
    gateway_port: TcpPort | None = None
    # this HQ worker's name, unique among the workers on one database: it logs in as
    # hq.{worker} (with auth_dir) and its MQTT client id is hq-{worker} unless client_id
    worker: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,32}\Z", description=(
        "this HQ worker's name: 1-32 letters, digits, '-' or '_' (e.g. 1, 2, 3)"))] = "1"
    client_id: Annotated[str, Meta(min_length=1, max_length=64, description=(
        "this HQ worker's MQTT client id, unique per worker"))] | None = None

    # How long the broker keeps this worker's session (and queues its share of the
    # shared subscription) after it vanished. Mosquitto keeps sending a dead member its
    # round-robin share until the session expires: with several workers, a short expiry
    # (e.g. 30) hands a dead worker's share to the others; gateways resend what was lost.
    session_expiry_s: Annotated[int, Meta(ge=0, le=MQTT_SESSION_EXPIRY_S, description=(
        "seconds the broker keeps this worker's session after it disconnects"))
    ] = MQTT_SESSION_EXPIRY_S

    def mqtt_client_id(self) -> str:
        """``client_id`` if set, else ``hq-{worker}``."""
        return self.client_id or f"hq-{self.worker}"
    # the directory of the broker's password_file and acl_file when the broker runs on
    # HQ's host: HQ renders both from its credential registry (0600) and logs in as hq.1
    # unless username is set; None: HQ writes no broker files
    auth_dir: str | None = None
    # Mosquitto's pid_file, for the SIGHUP that reloads those files; None: no reload
    pid_file: str | None = None


_SHARD_NAME = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,32}\Z", description=(
    "the shard's name in metrics and /health: 1-32 lowercase letters, digits or '_'"))]
_STORE_ID = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z", description=(
    "a store id: 1-64 letters, digits, '-' or '_'"))]


class ShardSection(BrokerLogin):
    """One more broker and the stores on it (``[[shards]]``); HQ logs in to it like to
    ``[broker]`` and renders its password/ACL files when ``auth_dir`` is set."""

    name: _SHARD_NAME
    stores: Annotated[list[_STORE_ID], Meta(min_length=1)]
    auth_dir: str | None = None
    pid_file: str | None = None


class HttpSection(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"  # the address to bind; 0.0.0.0 only behind a firewall or proxy
    port: TcpPort = 8080
    # The address phones and labels use (short links, QR and NFC URLs); None: whatever
    # address each HTTP request came to, which a client can choose (the Host header).
    public_base_url: Annotated[str, Meta(
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?\Z",
        description='http(s)://HOST[:PORT][/PATH], e.g. "https://hq.example.com"')] | None = None
    # request bodies above this are refused with 413 before HQ reads them (hq.api)
    max_body_bytes: Annotated[int, Meta(ge=1024, le=64 << 20, description=(
        "the largest request body HQ reads, in bytes (1 KiB to 64 MiB)"))] = MAX_BODY_BYTES
    # HTTPS: HQ's server certificate (PEM, with its chain) and its private key; both or
    # neither. None: plain HTTP (behind a TLS-terminating reverse proxy, or a pilot).
    tls_cert: str | None = None
    tls_key: str | None = None
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto HQ believes (IP addresses or
    # networks); empty: none, the headers are ignored whoever sends them.
    trusted_proxies: list[Annotated[str, Meta(min_length=1, max_length=64)]] = msgspec.field(
        default_factory=list)
    # The broker's secure WebSockets as shoppers' browsers reach them, for the web wallet
    # at /wallet (hq.wallet); None: the wallet page says it is not set up.
    wallet_broker_url: Annotated[str, Meta(
        pattern=r"^wss://[^\s/?#]+(/[^\s?#]*)?\Z",
        description='wss://HOST[:PORT][/PATH], e.g. "wss://mqtt.example.com:8884/mqtt"')] | None = None

    @property
    def https(self) -> bool:
        return self.tls_cert is not None


class LinksSection(msgspec.Struct, forbid_unknown_fields=True):
    # The only hosts short links may land on ("host" for the default port, "host:port"),
    # compared exactly (hq.landing). Empty: no short link can be minted or followed.
    landing_hosts: list[Annotated[str, Meta(min_length=1, max_length=260)]] = msgspec.field(
        default_factory=list)

    def hosts(self) -> LandingHosts:
        return LandingHosts(self.landing_hosts)


class RetentionSection(msgspec.Struct, forbid_unknown_fields=True):
    # events, till rows and leads older than this many days are deleted by the leader
    # (hq.retention, which lists what it keeps); 0: kept
    events_days: Annotated[float, Meta(ge=0)] = EVENTS_DAYS


class HqConfig(msgspec.Struct, forbid_unknown_fields=True):
    data_dir: str = "hq-data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Ed25519 bundle-signing key (PEM), created with mode 0600 if missing; None: DATA_DIR/hq-signing.pem
    signing_key: str | None = None
    learn_every_s: Annotated[float, Meta(ge=0, description=(
        "retrain, top up budget grants and republish bundles this often; 0 turns it off"))
    ] = LEARN_EVERY_S
    database: DatabaseSection = msgspec.field(default_factory=DatabaseSection)
    broker: HqBrokerSection = msgspec.field(default_factory=HqBrokerSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)
    links: LinksSection = msgspec.field(default_factory=LinksSection)
    retention: RetentionSection = msgspec.field(default_factory=RetentionSection)
    # stores sharded across brokers (hq.shards); a store no shard lists is on [broker]
    shards: list[ShardSection] = msgspec.field(default_factory=list)
    # who approves before a campaign or flash goes live (hq.approvals)
    approval: ApprovalPolicy = msgspec.field(default_factory=ApprovalPolicy)
    # feeds and rules that propose flash drafts (hq.feeds)
    feeds: FeedSettings = msgspec.field(default_factory=FeedSettings)
    # Apple and Google Wallet passes (hq.passes)
    passes: PassSettings = msgspec.field(default_factory=PassSettings)

    def db_url(self) -> str:
        return self.database.url or f"sqlite:///{Path(self.data_dir) / 'hq.sqlite'}"

    def key_path(self) -> Path:
        return Path(self.signing_key) if self.signing_key else Path(self.data_dir) / "hq-signing.pem"

    def mqtt_settings(self) -> MqttSettings:
        """The broker settings, with the password read from ``password_file`` if set."""
        return self.broker.mqtt_settings("broker", session_expiry_s=self.broker.session_expiry_s)

    def shard_settings(self) -> list[ShardSettings]:
        """Each ``[[shards]]`` broker, passwords read from their files."""
        out = []
        for i, sh in enumerate(self.shards):
            mqtt = sh.mqtt_settings(f"shards[{i}]", session_expiry_s=self.broker.session_expiry_s)
            out.append(ShardSettings(
                sh.name, mqtt, frozenset(sh.stores),
                auth_dir=None if sh.auth_dir is None else Path(sh.auth_dir),
                pid=None if sh.pid_file is None else pid_from_file(Path(sh.pid_file))))
        return out


def _set(data: dict[str, Any], path: str, value: object) -> None:
    """``data[a][b] = value`` for ``"a.b"``; a table the file got wrong stays for the check."""
    *tables, key = path.split(".")
    for name in tables:
        sub = data.setdefault(name, {})
        if not isinstance(sub, dict):
            return
        data = sub
    data[key] = value


def load_hq_config(path: str | None = None,
                   overrides: Mapping[str, object] | None = None) -> HqConfig:
    """HQ's config from ``path`` (None: all defaults), then ``overrides`` by dotted name
    (``{"database.url": ...}``, from command-line flags), checked together."""
    data: dict[str, Any] = {} if path is None else read_toml(
        path, create_hint=_CREATE.format(path=path))
    for name, value in (overrides or {}).items():
        _set(data, name, value)
    cfg = decode(data, HqConfig, file=path)
    cfg.broker.check("broker", file=path)
    _check_http(cfg.http, path)
    _check_shards(cfg.shards, path)
    check_passes(cfg.passes, path)
    for i, rule in enumerate(cfg.feeds.rules):
        if rule.sentiment_min > rule.sentiment_max or not (rule.keywords or rule.entities):
            raise ConfigError(f"feeds.rules[{i}]", "matches nothing (sentiment_min above "
                              "sentiment_max, or neither keywords nor entities)",
                              hint="give keywords or entities and sentiment_min <= sentiment_max",
                              file=path)
    for i, host in enumerate(cfg.links.landing_hosts):
        try:
            LandingHosts([host])
        except ValueError as exc:
            raise ConfigError(f"links.landing_hosts[{i}]", str(exc),
                              hint='write a host name, e.g. "shop.example.com" or '
                                   '"shop.example.com:8443"', file=path) from None
    return cfg


def _check_shards(shards: list[ShardSection], file: str | None) -> None:
    """Names unique, each store on one shard at most, a password or its file, TLS readable."""
    names: set[str] = set()
    owner: dict[str, str] = {}
    for i, sh in enumerate(shards):
        where = f"shards[{i}]"
        if sh.name in names or sh.name == DEFAULT_SHARD:
            raise ConfigError(f"{where}.name", f"{sh.name!r} is used twice (or is the default "
                              "broker's name)", hint="give each [[shards]] its own name",
                              file=file)
        names.add(sh.name)
        for store in sh.stores:
            if store in owner:
                raise ConfigError(f"{where}.stores", f"store {store!r} is on shard "
                                  f"{owner[store]!r} too", hint="list each store on one shard "
                                  "only (unlisted stores are on [broker])", file=file)
            owner[store] = sh.name
        sh.check(where, file=file)


def _check_http(http: HttpSection, file: str | None) -> None:
    """TLS files set in pairs and readable; trusted proxies are addresses or networks."""
    pair = {"http.tls_cert": http.tls_cert, "http.tls_key": http.tls_key}
    for field, other in (("http.tls_cert", "http.tls_key"), ("http.tls_key", "http.tls_cert")):
        if pair[field] is not None and pair[other] is None:
            raise ConfigError(other, f"is missing while {field} is set", file=file,
                              hint="set both (HTTPS) or neither (plain HTTP); "
                                   "aislecast hq ca init --https writes the pair")
    for field, value in pair.items():
        if value is not None and not Path(value).is_file():
            raise ConfigError(field, f"file {value} not found", file=file,
                              hint="aislecast hq ca init --https issues HQ's certificate and "
                                   "key (PEM), or point it at the ones you have")
    if http.tls_cert is not None and http.tls_key is not None:
        try:  # what uvicorn does at start, here so that a bad pair is one line, not a crash
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                http.tls_cert, http.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("http.tls_key", "is not the private key of http.tls_cert, or "
                              f"one of them is not PEM ({exc.strerror or exc})", file=file,
                              hint="give the certificate and key issued together (PEM, "
                                   "unencrypted)") from None
    for i, proxy in enumerate(http.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"http.trusted_proxies[{i}]", f"{proxy!r} is not an IP address "
                              "or network", file=file,
                              hint='write the reverse proxy\'s address, e.g. "10.0.0.5" or '
                                   '"10.0.0.0/24"') from None


def starter_toml() -> str:
    """The commented starter ``aislecast hq init --config-only`` writes (it loads as is)."""
    return resources.files("hq").joinpath("starter.toml").read_text(encoding="utf-8")
