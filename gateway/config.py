"""Typed gateway configuration, loaded from TOML; every error names the field and the fix.

Example (``aislecast gateway run --config gateway.toml``)::

    gateway = "gw-1"
    store = "store-1"
    data_dir = "/var/lib/aislecast"
    hq_public_key = "/etc/aislecast/hq.pub.pem"

    [broker]
    host = "127.0.0.1"
    port = 1883

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
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from aislecast.kernel.errors import AislecastError, ConfigError
from edge.nfc import NFC_MUTE_AFTER_TAP_S, NFC_POLL_INTERVAL_S, TECHNOLOGIES, check_path
from gateway.fleet import LOW_BATTERY_MV, UNHEARD_AFTER_S
from gateway.presence import PresenceParams

_PRESENCE = PresenceParams()

__all__ = [
    "BrokerSection",
    "FleetSection",
    "GatewayConfig",
    "NfcSection",
    "PresenceSection",
    "ScannerSection",
    "TagPlace",
    "load_config",
]


class BrokerSection(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None


class ScannerSection(msgspec.Struct, forbid_unknown_fields=True):
    backend: Literal["sim", "bluez"] = "sim"
    adapter: str = "hci0"
    mode: Literal["auto", "active", "passive"] = "auto"
    receivers: dict[str, str] = msgspec.field(default_factory=dict)
    receiver_tx_power_1m: int = -59  # phones' measured power at 1 m, calibrated per model
    sim_shoppers: int = 5
    sim_seed: int = 1
    sim_speed: float = 1.0  # simulated seconds per real second


class PresenceSection(msgspec.Struct, forbid_unknown_fields=True):
    """Presence tuning; defaults are :class:`gateway.presence.PresenceParams`' (measured)."""

    path_loss_exponent: float = _PRESENCE.path_loss_exponent
    hysteresis: float = _PRESENCE.hysteresis
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
    poll_interval: float = NFC_POLL_INTERVAL_S
    technologies: list[str] = msgspec.field(default_factory=lambda: ["106A"])
    mute_after_tap_s: float = NFC_MUTE_AFTER_TAP_S
    repeat_holdoff_s: float = 2.0  # same phone or tag within this is one tap
    tags: dict[str, TagPlace] = msgspec.field(default_factory=dict)


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    gateway: str
    store: str
    hq_public_key: str  # PEM text or a path to a PEM file
    data_dir: str = "/var/lib/aislecast"
    broker: BrokerSection = msgspec.field(default_factory=BrokerSection)
    scanner: ScannerSection = msgspec.field(default_factory=ScannerSection)
    presence: PresenceSection = msgspec.field(default_factory=PresenceSection)
    fleet: FleetSection = msgspec.field(default_factory=FleetSection)
    nfc: NfcSection = msgspec.field(default_factory=NfcSection)
    health_every_s: float = 10.0

    def public_key_pem(self) -> str:
        if self.hq_public_key.lstrip().startswith("-----BEGIN"):
            return self.hq_public_key
        path = Path(self.hq_public_key)
        if not path.exists():
            raise ConfigError(
                "hq_public_key", f"file {path} not found",
                hint="copy HQ's public key (GET /api/keys/bundle on HQ) to this path",
            )
        return path.read_text()


_HINTS = {
    "gateway": "set gateway = \"gw-1\" (this gateway's id, as registered at HQ)",
    "store": "set store = \"store-1\" (the store id this gateway serves)",
    "hq_public_key": "set hq_public_key to the path of HQ's bundle-signing public key (PEM)",
    "scanner.backend": 'use "bluez" (a real adapter) or "sim" (the simulated store)',
    "scanner.mode": 'use "auto", "active" or "passive"',
}


def _validate(cfg: GatewayConfig) -> GatewayConfig:
    if not 1 <= cfg.broker.port <= 65535:
        raise ConfigError("broker.port", f"{cfg.broker.port} is not a TCP port", hint="use 1..65535")
    if not 1.5 <= cfg.presence.path_loss_exponent <= 5.0:
        raise ConfigError("presence.path_loss_exponent", "out of range",
                          hint="indoors 2.0-3.5; 2.5 is a good start")
    if not 0 <= cfg.presence.hysteresis < 1:
        raise ConfigError("presence.hysteresis", "must be within 0..1", hint="0.15-0.3 works well")
    _validate_nfc(cfg.nfc)
    for name in ("gateway", "store"):
        value = getattr(cfg, name)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ConfigError(name, f"{value!r} cannot be used in an MQTT topic",
                              hint="use 1-64 letters, digits, '-' and '_' (no '.', '/', '+', '#')")
    return cfg


def _validate_nfc(nfc: NfcSection) -> None:
    if nfc.device is not None:
        try:
            check_path(nfc.device)
        except AislecastError as exc:
            raise ConfigError("nfc.device", exc.message, hint=exc.hint) from exc
    if not 0.001 <= nfc.poll_interval <= 2.0:
        raise ConfigError("nfc.poll_interval", f"{nfc.poll_interval} s is out of range",
                          hint="0.02 s: ~12 ms median tap latency for ~2 % of a core")
    unknown = set(nfc.technologies) - TECHNOLOGIES
    if not nfc.technologies or unknown:
        raise ConfigError("nfc.technologies", f"unknown or empty: {sorted(unknown)}",
                          hint=f"choose among {sorted(TECHNOLOGIES)}; [\"106A\"] covers phones")
    if nfc.mute_after_tap_s < 0 or nfc.repeat_holdoff_s < 0:
        raise ConfigError("nfc.mute_after_tap_s", "must be >= 0", hint="use the defaults")


def load_config(source: Path | str | dict[str, object]) -> GatewayConfig:
    """Load and validate a config from a TOML file path or a dict."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("--config", f"{path} does not exist",
                              hint="pass the path of the gateway's TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc
    try:
        cfg = msgspec.convert(data, GatewayConfig)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc)) from exc
    return _validate(cfg)


def _explain(text: str) -> ConfigError:
    """Turn msgspec's message into the field's dotted name and what to do about it."""
    where = text.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in text else ""
    name = text.split("`")[1] if "`" in text else ""
    if "unknown field" in text:
        field = f"{where}.{name}" if where else name
        return ConfigError(field, "is not a setting aislecast knows",
                           hint="check the spelling, or remove it (see `aislecast gateway --help`)")
    if "required field" in text:
        field = f"{where}.{name}" if where else name
        return ConfigError(field, "is required", hint=_HINTS.get(field, "add it to the file"))
    field = where or "config"
    return ConfigError(field, text.split(" - at ", maxsplit=1)[0],
                       hint=_HINTS.get(field) or _HINTS.get(field.split(".")[0]))
