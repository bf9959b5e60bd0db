"""Typed gateway configuration, loaded from TOML by :mod:`aislecast.kernel.config`.

Constraints are ``msgspec.Meta`` on the fields, so a bad value is refused with its
dotted name and the allowed range; ``aislecast gateway init`` writes the commented
starter file (gateway/starter.toml, also examples/gateway.toml). Example
(``aislecast gateway run --config gateway.toml``)::

    gateway = "gw-1"
    store = "store-1"
    data_dir = "/var/lib/aislecast"
    hq_public_key = "/etc/aislecast/hq.pub.pem"   # or a list, during a key rotation

    [broker]
    host = "mqtt.example.com"
    port = 8883                            # the broker's mutual-TLS listener
    tls_ca = "/etc/aislecast/gw-1.ca.crt"  # all three from `aislecast hq gateways add --tls`
    tls_cert = "/etc/aislecast/gw-1.crt"
    tls_key = "/etc/aislecast/gw-1.key"    # 0600

    [scanner]
    backend = "bluez"      # or "sim"
    adapter = "hci0"
    [scanner.receivers]    # receiver (adapter or simulated antenna) -> zone it sits in
    hci0 = "entrance"

    [nfc]                  # optional: a reader at the till (phones tap their token)
    device = "usb"         # nfcpy path: usb, usb:VID:PID, tty:USB0:pn532, udp:127.0.0.1:PORT
    zone = "checkout"      # where the reader sits: phone taps decide in this zone
    technologies = ["106A"]
    [nfc.tags."T-17"]      # optional: where a shelf tag sits, overriding its own record
    zone = "dairy"
    product = "milk-1l"

    [metrics]              # optional: Prometheus exposition on 127.0.0.1:9108
    port = 9108
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from aislecast.kernel.broker_login import BrokerLogin
from aislecast.kernel.config import decode, load_toml
from aislecast.kernel.errors import AislecastError, ConfigError
from aislecast.kernel.verify import public_key_from_pem
from edge.nfc.settings import NFC_MUTE_AFTER_TAP_S, NFC_POLL_INTERVAL_S, TECHNOLOGIES, check_path
from gateway.fleet import LOW_BATTERY_MV, UNHEARD_AFTER_S
from gateway.presence import PresenceParams

_PRESENCE = PresenceParams()

__all__ = [
    "SCANNER_SILENT_AFTER_S",
    "BrokerSection",
    "FleetSection",
    "GatewayConfig",
    "MetricsSection",
    "NfcSection",
    "PresenceSection",
    "ScannerSection",
    "TagPlace",
    "load_config",
    "starter_toml",
]

# An id that is one MQTT topic level: no '/', '+', '#' (and no '.', kept out of file names).
_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}\Z"
_ID_RULE = "1-64 letters, digits, '-' and '_'; no '.', '/', '+' or '#' (an MQTT topic level)"
_Seconds = Annotated[float, Meta(ge=0)]


class BrokerSection(BrokerLogin):
    """``[broker]``: :class:`~aislecast.kernel.broker_login.BrokerLogin` as it is; a
    gateway logs in as gw.{store}.{gateway} with a password, or with the client
    certificate `aislecast hq gateways add --tls` writes (its CN is the username)."""


# A store always hears its fixed beacons; the BlueZ scanner's own recovery (restart,
# power cycle, recreate: edge/bluez/const.py) takes ~12 s of silence plus at most three
# 5 s attempts. Silent longer than this, the scanner counts as dead: the systemd watchdog
# stops and `aislecast gateway health` fails (gateway/health.py).
SCANNER_SILENT_AFTER_S = 30.0


class ScannerSection(msgspec.Struct, forbid_unknown_fields=True):
    # no default: a production gateway must never fall back to the simulator unasked
    backend: Annotated[Literal["sim", "bluez"], Meta(
        description='backend = "bluez" for a real adapter, or "sim" for the simulated store')]
    adapter: str = "hci0"
    silent_after_s: Annotated[float, Meta(
        gt=0, description="longer than the scanner's own recovery, ~30 s")] = SCANNER_SILENT_AFTER_S
    mode: Literal["auto", "active", "passive"] = "auto"
    receivers: dict[str, str] = msgspec.field(default_factory=dict)
    receiver_tx_power_1m: int = -59  # phones' measured power at 1 m, calibrated per model
    sim_shoppers: int = 5
    sim_seed: int = 1
    sim_speed: float = 1.0  # simulated seconds per real second


class PresenceSection(msgspec.Struct, forbid_unknown_fields=True):
    """Presence tuning; defaults are :class:`gateway.presence.PresenceParams`' (measured)."""

    path_loss_exponent: Annotated[float, Meta(
        ge=1.5, le=5.0, description="indoors 2.0-3.5; 2.5 is a good start")
    ] = _PRESENCE.path_loss_exponent
    hysteresis: Annotated[float, Meta(ge=0, lt=1, description="0.15-0.3 works well")
                          ] = _PRESENCE.hysteresis
    absence_s: float = _PRESENCE.absence_s
    dwell_every_s: float = _PRESENCE.dwell_every_s
    smoother: Literal["kalman", "one_euro"] = _PRESENCE.smoother
    kalman_q: float = _PRESENCE.kalman_q
    kalman_r: float = _PRESENCE.kalman_r
    euro_min_cutoff: float = _PRESENCE.euro_min_cutoff
    euro_beta: float = _PRESENCE.euro_beta
    stale_s: float = _PRESENCE.stale_s

    def params(self) -> PresenceParams:
        return PresenceParams(**msgspec.structs.asdict(self))


class FleetSection(msgspec.Struct, forbid_unknown_fields=True):
    unheard_after_s: float = UNHEARD_AFTER_S  # a planned beacon silent this long -> alert
    low_battery_mv: int = LOW_BATTERY_MV  # TLM battery under this -> alert


class TagPlace(msgspec.Struct, forbid_unknown_fields=True):
    """Where a shelf tag sits and what it labels (overrides the tag's own record)."""

    zone: str | None = None
    product: str | None = None


class NfcSection(msgspec.Struct, forbid_unknown_fields=True):
    device: str | None = None  # nfcpy device path; None: no reader on this gateway
    zone: str | None = None  # the zone the reader sits in
    reader_tag: str | None = None  # tag id campaigns may target for phone taps on the reader
    poll_interval: Annotated[float, Meta(
        ge=0.001, le=2.0, description="0.02 s: ~12 ms median tap latency for ~2 % of a core")
    ] = NFC_POLL_INTERVAL_S
    technologies: Annotated[list[str], Meta(
        min_length=1, description=f'choose among {sorted(TECHNOLOGIES)}; ["106A"] covers phones')
    ] = msgspec.field(default_factory=lambda: ["106A"])
    mute_after_tap_s: _Seconds = NFC_MUTE_AFTER_TAP_S
    repeat_holdoff_s: _Seconds = 2.0  # same phone or tag within this is one tap
    tags: dict[str, TagPlace] = msgspec.field(default_factory=dict)


class MetricsSection(msgspec.Struct, forbid_unknown_fields=True):
    # Prometheus exposition on 127.0.0.1:port; None (the default): not served
    port: Annotated[int, Meta(ge=0, le=65535)] | None = None


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    gateway: Annotated[str, Meta(pattern=_ID_PATTERN, description=(
        f'this gateway\'s id as registered at HQ, e.g. "gw-1"; {_ID_RULE}'))]
    store: Annotated[str, Meta(pattern=_ID_PATTERN, description=(
        f'the store this gateway serves, e.g. "store-1"; {_ID_RULE}'))]
    # one key, or several while HQ rotates its key (each a path or the PEM text)
    hq_public_key: Annotated[str, Meta(min_length=1, description=(
        "the path of HQ's bundle-signing public key (PEM), or the PEM text itself"))] | Annotated[
        list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1, max_length=8, description=(
            "HQ's bundle-signing public keys, each a path or PEM text"))]
    scanner: Annotated[ScannerSection, Meta(description=(
        'a [scanner] table with backend = "bluez" (a real adapter) or "sim" (the simulator)'))]
    data_dir: str = "/var/lib/aislecast"
    broker: BrokerSection = msgspec.field(default_factory=BrokerSection)
    presence: PresenceSection = msgspec.field(default_factory=PresenceSection)
    fleet: FleetSection = msgspec.field(default_factory=FleetSection)
    nfc: NfcSection = msgspec.field(default_factory=NfcSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    health_every_s: float = 10.0

    @property
    def metrics_port(self) -> int | None:
        """``[metrics] port``: where to serve Prometheus metrics, None for nowhere."""
        return self.metrics.port

    def public_keys(self) -> list[bytes]:
        """The pinned HQ keys; a ConfigError names the entry that is missing or not a key."""
        one = isinstance(self.hq_public_key, str)
        entries = [self.hq_public_key] if isinstance(self.hq_public_key, str) else self.hq_public_key
        keys = []
        for i, entry in enumerate(entries):
            field = "hq_public_key" if one else f"hq_public_key[{i}]"
            pem = entry
            if not entry.lstrip().startswith("-----BEGIN"):
                path = Path(entry)
                if not path.exists():
                    raise ConfigError(field, f"file {path} not found", hint=(
                        "copy HQ's public key to this path (GET /api/keys/bundle on HQ, with "
                        "any HQ token)"))
                pem = path.read_text()
            try:
                keys.append(public_key_from_pem(pem))
            except (AislecastError, ValueError):
                raise ConfigError(field, "is not an Ed25519 public key (PEM)", hint=(
                    "pin the PEM that GET /api/keys/bundle or aislecast hq keys list --json "
                    "gives")) from None
        return keys


def _check_nfc(nfc: NfcSection, file: str | None) -> None:
    """What msgspec.Meta cannot say: the device path's grammar and the technology names
    (both owned by edge.nfc, so they are checked with its own definitions)."""
    if nfc.device is not None:
        try:
            check_path(nfc.device)
        except AislecastError as exc:
            raise ConfigError("nfc.device", exc.message, hint=exc.hint, file=file) from exc
    unknown = sorted(set(nfc.technologies) - TECHNOLOGIES)
    if unknown:
        raise ConfigError("nfc.technologies", f"unknown: {unknown}", file=file,
                          hint=f'choose among {sorted(TECHNOLOGIES)}; ["106A"] covers phones')


def load_config(source: Path | str | Mapping[str, object]) -> GatewayConfig:
    """Load and validate a config from a TOML file path or a mapping (tests, the demo)."""
    if isinstance(source, Path | str):
        file: str | None = str(source)
        cfg = load_toml(source, GatewayConfig, create_hint=f"aislecast gateway init -o {file}")
    else:
        file = None
        cfg = decode(source, GatewayConfig)
    _check_nfc(cfg.nfc, file)
    b = cfg.broker
    b.check("broker", file=file)
    if b.password_file is None:
        return cfg
    # the password read once, at load (mqtt_settings then uses it as it is)
    password = b.secret("broker", file=file)
    return msgspec.structs.replace(cfg, broker=msgspec.structs.replace(b, password=password))


def starter_toml() -> str:
    """The commented starter file ``aislecast gateway init`` writes (it loads as is)."""
    return resources.files("gateway").joinpath("starter.toml").read_text(encoding="utf-8")
