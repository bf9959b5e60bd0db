"""Every MQTT payload and bundle body, versioned, in one module shared by all sides.

Payloads are JSON with a ``v`` field (docs/architecture.md#payloads). Decoding untrusted bytes goes through
:func:`decode`, which raises only :class:`msgspec.ValidationError` /
:class:`msgspec.DecodeError`; callers count and drop.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

import msgspec

from aislecast.kernel.campaign import (
    Audience,
    Budget,
    Campaign,
    Caps,
    Creative,
    FormField,
    Model,
    Profile,
    Schedule,
    Trigger,
    TriggerKind,
    Window,
)

__all__ = [
    "MAX_DELTA_SHOPPERS",
    "MAX_REPORTED_BEACONS",
    "MAX_UNKNOWN_TOKENS",
    "SCHEMA_VERSION",
    "Audience",
    "Beacon",
    "BeaconHealth",
    "Budget",
    "Bundle",
    "BundleDelta",
    "Campaign",
    "Caps",
    "Creative",
    "Event",
    "EventBatch",
    "EventKind",
    "Feedback",
    "FeedbackAck",
    "FeedbackKind",
    "GatewayState",
    "InteractionReport",
    "KeyNotice",
    "Model",
    "Offer",
    "PhoneSighting",
    "Profile",
    "Schedule",
    "SignedEnvelope",
    "Store",
    "TokenTable",
    "Trigger",
    "TriggerKind",
    "UnknownTokens",
    "Window",
    "Zone",
    "decode",
    "encode",
]

SCHEMA_VERSION = 1

#: A version or sequence number: gateways keep them in SQLite, whose INTEGER is 64-bit
#: signed; a bigger one (even validly signed) is refused as malformed, never half-applied.
_Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
#: Shoppers one delta's ``unprofiled`` list names at most (HQ sends one per withdrawal).
MAX_DELTA_SHOPPERS: Final = 10_000
#: Token rotation: epoch = unix time >> k; a negative shift would fail every lookup.
_RotationK = Annotated[int, msgspec.Meta(ge=0, le=32)]

T = TypeVar("T")

EventKind = Literal[
    "sighting_summary",
    "zone_enter",
    "zone_dwell",
    "zone_exit",
    "tap",
    "decision",
    "offer_published",
    "offer_delivered",
    "offer_opened",
    "offer_clicked",
    "offer_redeemed",
    "offer_dismissed",
    "lead_submitted",
    "beacon_health",
    "gateway_health",
]
FeedbackKind = Literal["delivered", "opened", "clicked", "redeemed", "dismissed", "lead"]


class Zone(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    id: str
    name: str
    kind: str = "aisle"  # entrance, aisle, checkout, ...
    max_radius_m: float = 6.0
    x: float = 0.0
    y: float = 0.0


class Beacon(msgspec.Struct, frozen=True):
    """A fixed beacon: identified on air by iBeacon (uuid, major, minor) or Eddystone UID."""

    id: str
    zone: str
    uuid: str | None = None
    major: int | None = None
    minor: int | None = None
    namespace: str | None = None
    instance: str | None = None
    tx_power_1m: int = -59
    interval_ms: int = 350


class Store(msgspec.Struct, frozen=True):
    """A store. ``latitude`` and ``longitude`` (optional, both or neither) place it on the
    map: wallet passes list them under ``locations``. Gateways ignore them."""

    id: str
    name: str
    tz: str = "UTC"
    # descriptions only: a range here would make a gateway refuse a whole bundle for it
    latitude: Annotated[float, msgspec.Meta(description=(
        "WGS 84 degrees, -90..90; with longitude, or neither"))] | None = None
    longitude: Annotated[float, msgspec.Meta(description=(
        "WGS 84 degrees, -180..180; with latitude, or neither"))] | None = None


class TokenTable(msgspec.Struct, frozen=True):
    """``token hex -> inbox`` for one rotation epoch (epoch = unix_time >> k)."""

    epoch: int
    tokens: dict[str, str]


class KeyNotice(msgspec.Struct, frozen=True, omit_defaults=True):
    """A bundle-signing key as HQ announces it inside a signed bundle (key rotation).

    A gateway pins a ``next`` (and keeps a ``current`` or ``previous``) key announced by
    a bundle it verified with a key it already pins, and drops a ``retired`` one for
    good. ``public_key`` is the PEM (absent for a retired key); ``kid`` its key id.
    """

    kid: str
    state: Literal["current", "next", "previous", "retired"]
    public_key: str | None = None


class Bundle(msgspec.Struct, frozen=True):
    v: int
    version: _Seq
    store: Store
    issued_at: float
    expires_at: float
    zones: list[Zone]
    beacons: list[Beacon]
    campaigns: list[Campaign]
    rotation_k: _RotationK
    token_tables: list[TokenTable]
    opt_outs: list[str] = msgspec.field(default_factory=list)
    model: Model | None = None  # ranking weights, profiles and bandit arms (aislecast.kernel.campaign)
    delta_seq: _Seq = 0  # HQ's last delta for the store when built: older deltas are replays
    keys: list[KeyNotice] = msgspec.field(default_factory=list)  # HQ's keyring (rotation)
    # the store's provisioned gateway ids (HQ's registry): peers' batches and presence
    # from any other gateway id are dropped; empty: HQ named none, peers are not checked
    gateways: list[str] = msgspec.field(default_factory=list)
    # the store's redemption key (hex; aislecast.kernel.redeem): gateways mint till codes
    redeem_key: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")] | None = None


class BundleDelta(msgspec.Struct, frozen=True):
    """Urgent changes between bundles: applied on top of bundle ``base_version``."""

    v: int
    seq: _Seq  # strictly increasing per store
    store: str
    issued_at: float
    expires_at: float
    opt_outs: list[str] = msgspec.field(default_factory=list)
    paused: list[str] = msgspec.field(default_factory=list)
    campaigns: list[Campaign] = msgspec.field(default_factory=list)  # flash / edits
    # consent and data rights (hq.consent): shoppers (re-)admitted with the token tables
    # the bundle would carry for them; shoppers whose every row a gateway purges
    opt_ins: list[str] = msgspec.field(default_factory=list)
    tokens: list[TokenTable] = msgspec.field(default_factory=list)
    erased: list[str] = msgspec.field(default_factory=list)
    # the admitted shoppers' profiles, cut as the bundle cuts them (hq.store_model): a
    # first visit is ranked and matched by audience rules at once, not at the next bundle
    profiles: dict[str, Profile] = msgspec.field(default_factory=dict)
    # shoppers who withdrew personalisation (hq.purposes): the gateway drops their
    # profile and local boosts and ranks and targets them as an anonymous shopper
    unprofiled: Annotated[list[str], msgspec.Meta(max_length=MAX_DELTA_SHOPPERS)] = \
        msgspec.field(default_factory=list)


class SignedEnvelope(msgspec.Struct, frozen=True):
    """``body`` is canonical JSON (base64); ``sig`` its Ed25519 signature (base64)."""

    v: int
    kind: Literal["bundle", "delta"]
    kid: str
    body: str
    sig: str


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    kind: EventKind
    ts: float
    store: str
    gateway: str | None = None
    inbox: str | None = None
    zone: str | None = None
    campaign: str | None = None
    variant: str | None = None
    offer: str | None = None
    reason: str | None = None
    dwell_s: float | None = None
    holdout: bool | None = None
    detail: dict[str, float | int | str] | None = None


class EventBatch(msgspec.Struct, frozen=True):
    v: int
    store: str
    gateway: str
    events: list[Event]
    batch: str | None = None  # id HQ echoes in its BatchAck once the events are stored


class BatchAck(msgspec.Struct, frozen=True):
    """HQ -> gateway: the events of ``batch`` are stored (end-to-end acknowledgement)."""

    v: int
    batch: str
    stored: int


class Offer(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    id: str
    campaign: str
    variant: str
    store: str
    inbox: str
    issued_at: float
    expires_at: float
    title: str
    body: str = ""
    format: str = "banner"
    cta: str = "Open"
    url: str | None = None
    image_url: str | None = None
    coupon_code: str | None = None
    zone: str | None = None
    redeem_code: str | None = None  # single-use till code (aislecast.kernel.redeem)
    countdown: bool = False  # the campaign's flag: the wallet shows a countdown to expires_at
    form: list[FormField] = msgspec.field(default_factory=list)  # a lead creative's form


# Bounds on what only HQ decodes from phones (HQ stores these strings): ids are at
# most 64 characters where HQ or a gateway mints them; 128 leaves room, nothing more.
_Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_LeadFields = Annotated[
    dict[Annotated[str, msgspec.Meta(min_length=1, max_length=32)],
         Annotated[str, msgspec.Meta(max_length=200)]],
    msgspec.Meta(max_length=6)]


class Feedback(msgspec.Struct, frozen=True):
    v: int
    id: _Ref  # feedback id (idempotency)
    offer: _Ref
    campaign: _Ref
    store: _Ref
    inbox: _Ref
    kind: FeedbackKind
    ts: float
    # a lead's form (kind "lead" only; hq.leads checks it against the creative's form):
    # personal data, stored in HQ's leads table, never in the event
    fields: _LeadFields | None = None


class FeedbackAck(msgspec.Struct, frozen=True):
    """HQ -> phone: these feedback ids are stored; the phone stops resending them."""

    v: int
    ids: list[str]


class PhoneSighting(msgspec.Struct, frozen=True):
    """Phone-observed sighting of a fixed beacon (docs/architecture.md#sighting-modes)."""

    v: int
    token: str
    beacon: str
    rssi: int
    ts: float


#: The most tokens one :class:`UnknownTokens` report carries.
MAX_UNKNOWN_TOKENS: Final = 256
_Token = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]


class UnknownTokens(msgspec.Struct, frozen=True):
    """Gateway -> HQ: rotating tokens it heard and could not resolve, so HQ can admit a
    shopper on a first visit to the store (gateway.first_visit, hq.first_visit)."""

    v: int
    store: str
    gateway: str
    tokens: Annotated[list[_Token], msgspec.Meta(max_length=MAX_UNKNOWN_TOKENS)]


class InteractionReport(msgspec.Struct, frozen=True):
    """Phone -> gateway: the shopper tapped a shelf tag (``tap``) or scanned its QR label
    (``scan``). ``tag`` is the tag id from our NDEF record or the link's ``t=`` parameter;
    ``zone``/``product`` are what the tag's own record says (the gateway's map wins).
    ``id`` makes QoS 1 redelivery idempotent; ``token`` is the current rotating token."""

    v: int
    id: str
    kind: Literal["tap", "scan"]
    token: str
    tag: str
    ts: float
    code: str | None = None  # the short link code, when the URL carried one
    zone: str | None = None
    product: str | None = None


#: At most this many beacons in a state report (the gateway sends the worst first and
#: counts the rest in ``beacons_omitted``); a bigger list is refused at HQ.
MAX_REPORTED_BEACONS: Final = 256
_BeaconId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class BeaconHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One planned beacon as its gateway hears it (gateway.fleet.BeaconStatus)."""

    id: _BeaconId
    zone: Annotated[str, msgspec.Meta(max_length=64)] = ""
    last_seen_age_s: Annotated[float, msgspec.Meta(ge=0)] | None = None  # None: never heard
    rssi: Annotated[int, msgspec.Meta(ge=-128, le=127)] | None = None
    battery_mv: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None  # from TLM
    alert: Literal["unheard", "low_battery"] | None = None  # the gateway's own judgement


class GatewayState(msgspec.Struct, frozen=True):
    v: int
    gateway: str
    store: str
    status: Literal["online", "offline"]
    version: str
    bundle_version: int = 0
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    ts: float = 0.0  # unix time of this report (the will's: when the gateway started)
    # the gateway's own health judgement (gateway.health): what a person must fix now
    # (unhealthy), or what looks wrong but may pass (a warning); None when all is well
    problem: str | None = None
    warning: str | None = None
    # the planned beacons' health (optional: older gateways send none)
    beacons: Annotated[list[BeaconHealth], msgspec.Meta(max_length=MAX_REPORTED_BEACONS)] | None = None
    beacons_omitted: Annotated[int, msgspec.Meta(ge=0)] = 0  # planned beacons past the cap


_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[object], msgspec.json.Decoder[object]] = {}


def encode(obj: msgspec.Struct) -> bytes:
    return _ENCODER.encode(obj)


def decode(data: bytes | str, cls: type[T]) -> T:
    """Decode untrusted JSON into ``cls``; raises msgspec errors, never anything else.

    msgspec recurses into nested arrays and objects, also to skip a field ``cls`` does
    not have, so ``{"x": [[[...]]]}`` a few thousand levels deep ends in RecursionError:
    that is malformed input like any other, a :class:`msgspec.DecodeError` here."""
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = msgspec.json.Decoder(cls)
        _DECODERS[cls] = dec
    try:
        result: T = dec.decode(data)  # type: ignore[assignment]
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None
    return result
