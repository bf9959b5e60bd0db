"""Taps and scans -> decisions: the gateway's NFC reader and the app's interaction reports.

Two ways a shopper touches a shelf call to action (docs/architecture.md#sighting-modes), one decision path:

- **at the gateway's reader**: the phone answers our ISO-DEP AID with its rotating
  token (:class:`edge.nfc.Tap` ``kind="phone"``); the token resolves through the
  bundle's tables like an advert's, and the tap decides in the reader's zone;
- **at a shelf tag or QR label**: the app reads the tag (or scans the label's short
  link), then publishes an :class:`aislecast.kernel.schema.InteractionReport` with its token
  and the tag id on ``px/v1/stores/{store}/interactions`` (QoS 1). A phone may write its
  store's ``sightings`` and ``interactions`` topics and nothing else of the store's.

Both become one ``tap`` event (``detail.source`` says where from) and one decision with
trigger ``tap`` (NFC) or ``scan`` (QR), through the same caps, consent, holdout and
outbox path as a zone entry (``act`` is :meth:`gateway.app.Gateway.interaction`). The
tag id is tried first, then its product, so campaigns may target either.

The reader runs inside the gateway's TaskGroup but can never stop it: :meth:`run`
swallows and logs every failure, restarts the reader with full-jitter backoff, and
nfcpy itself runs on its own thread, so BLE scanning never waits for it.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Final

import msgspec

import edge.nfc
from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import SCHEMA_VERSION, InteractionReport, decode
from edge.nfc import Tap
from edge.nfc.settings import MAX_FIELD_LEN, NFC_BACKOFF_BASE, NFC_BACKOFF_CAP_S
from gateway.config import NfcSection
from gateway.decisions import Decision, DecisionEngine, TriggerEvent

__all__ = ["MAX_REPORT_BYTES", "REPORT_SKEW_S", "TapRouter", "decide_tags"]

log = get_logger(__name__)

#: A report is ~200 bytes of JSON; anything past 2 KiB is not from our app.
MAX_REPORT_BYTES: Final = 2048
#: Reports older or newer than this are replays or broken clocks (one token epoch at the
#: demo's K=9 is 512 s; the identity tables tolerate one epoch of skew already).
REPORT_SKEW_S: Final = 300.0
#: Report ids remembered for QoS 1 redelivery (a store sees a few taps a second at most).
_SEEN_IDS: Final = 4096

_FIELD_RE: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_FIELD_LEN}}}")
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{16}")
_ID_RE: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
#: Decision reasons after which the next tag (the product) is worth a try.
_TRY_NEXT: Final = frozenset({"tag_not_targeted", "no_campaign"})

Resolve = Callable[[str, float], str | None]
Detail = dict[str, float | int | str]
Act = Callable[[str, str | None, str | None, Sequence[str], Detail], Decision | None]


def decide_tags(decider: DecisionEngine, kind: str, inbox: str, *, zone: str | None, now: float,
                visit: str, tags: Sequence[str]) -> Decision:
    """Decide for the first of ``tags`` (tag id, then product) that a campaign targets."""
    d = decider.decide(TriggerEvent(kind, inbox, zone, now, 0.0, visit,
                                    tag=tags[0] if tags else None))
    for tag in tags[1:]:
        if d.reason not in _TRY_NEXT:
            break
        d = decider.decide(TriggerEvent(kind, inbox, zone, now, 0.0, visit, tag=tag))
    return d


class TapRouter:
    """Turn reader taps and app reports into ``act(kind, inbox, zone, tags, detail)`` calls.

    ``resolve`` maps a token to an inbox (the gateway's IdentityResolver), ``zone_of``
    gives a shopper's current zone, ``zones`` the bundle's zone ids, ``bad`` counts a
    dropped payload by reason (the gateway's ``bad_payloads``).
    """

    def __init__(self, cfg: NfcSection, *, resolve: Resolve, zone_of: Callable[[str], str | None],
                 zones: Callable[[], Collection[str]], act: Act, bad: Callable[[str], None],
                 reader_factory: Callable[..., edge.nfc.NfcReader] | None = None) -> None:
        self.cfg = cfg
        self._resolve, self._zone_of, self._zones = resolve, zone_of, zones
        self._act, self._bad = act, bad
        self._factory = reader_factory
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._recent: dict[tuple[str, str, str], float] = {}
        self.reader: edge.nfc.NfcReader | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            ("reader_taps", "reader_tags", "reader_tokens_unknown", "reports", "report_taps",
             "report_scans", "report_duplicates", "report_repeats", "reader_restarts"), 0)

    # ---- the gateway's own reader ------------------------------------------------------
    def on_tap(self, tap: Tap) -> None:
        """NfcReader callback (on the event loop)."""
        cfg = self.cfg
        if tap.kind == "phone" and tap.token is not None:
            inbox = self._resolve(tap.token, time.time())
            if inbox is None:
                self.stats["reader_tokens_unknown"] += 1
                return
            self.stats["reader_taps"] += 1
            zone = cfg.zone or self._zone_of(inbox)
            tags = [cfg.reader_tag] if cfg.reader_tag else []
            self._act("tap", inbox, zone, tags, {"source": "nfc_reader"})
            return
        # a shelf tag held to the reader (staff checking a tag): logged, nobody to offer to
        self.stats["reader_tags"] += 1
        detail: Detail = {"source": "nfc_reader", "tag_uid": tap.tag_uid}
        if tap.tag_id is not None:
            detail["tag"] = tap.tag_id
        self._act("tap", None, cfg.zone, [], detail)

    async def run(self) -> None:
        """Own the reader for the gateway's lifetime; never raises (but cancellation)."""
        cfg = self.cfg
        if cfg.device is None:
            return
        # The reader loads nfcpy and ndeflib (~3 MiB of RSS): edge.nfc imports it on this
        # first use, so a gateway without a device configured never pays for it.
        factory = self._factory or edge.nfc.NfcReader
        attempt = 0
        while True:
            try:
                reader = factory(
                    cfg.device, self.on_tap, poll_interval=cfg.poll_interval,
                    technologies=tuple(cfg.technologies), mute_after_tap_s=cfg.mute_after_tap_s,
                    repeat_holdoff_s=cfg.repeat_holdoff_s)
                async with reader:
                    self.reader = reader
                    await reader.wait_stopped()
                log.error("nfc reader %s stopped: %s", cfg.device, reader.stats()["last_error"])
            except Exception:
                log.exception("nfc reader %s failed; BLE and MQTT carry on", cfg.device)
            attempt += 1
            self.stats["reader_restarts"] += 1
            await asyncio.sleep(random.uniform(0, min(NFC_BACKOFF_CAP_S,
                                                      NFC_BACKOFF_BASE ** min(attempt, 10))))

    # ---- reports from the shopper app -------------------------------------------------
    def on_report(self, payload: bytes, *, sender: str | None = None) -> None:
        """An InteractionReport from ``px/v1/stores/{store}/interactions/{sender}``; bad
        ones counted. The token must resolve to the sender's own inbox."""
        if len(payload) > MAX_REPORT_BYTES:
            self._bad("interaction")
            return
        try:
            r = decode(payload, InteractionReport)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._bad("interaction")
            return
        if (r.v != SCHEMA_VERSION or not _ID_RE.fullmatch(r.id) or not _TOKEN_RE.fullmatch(r.token)
                or not _FIELD_RE.fullmatch(r.tag)
                or any(x is not None and not _FIELD_RE.fullmatch(x) for x in (r.code, r.zone, r.product))):
            self._bad("interaction")
            return
        now = time.time()
        if not abs(now - r.ts) <= REPORT_SKEW_S:  # also catches nan
            self._bad("interaction_stale")
            return
        self.stats["reports"] += 1
        if r.id in self._seen:
            self.stats["report_duplicates"] += 1
            return
        self._seen[r.id] = None
        if len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)
        inbox = self._resolve(r.token, now)
        if inbox is None:
            self._bad("interaction_unresolved")
            return
        if sender is not None and inbox != sender:
            self._bad("interaction_sender")
            return
        if self._repeat((inbox, r.kind, r.tag), now):
            self.stats["report_repeats"] += 1
            return
        self.stats["report_taps" if r.kind == "tap" else "report_scans"] += 1
        place = self.cfg.tags.get(r.tag)
        zone = place.zone if place is not None and place.zone else None
        if zone is None:
            zone = r.zone if r.zone in self._zones() else self._zone_of(inbox)
        product = place.product if place is not None and place.product else r.product
        tags = [r.tag] if product is None or product == r.tag else [r.tag, product]
        detail: Detail = {"source": "nfc" if r.kind == "tap" else "qr", "tag": r.tag}
        if product is not None:
            detail["product"] = product
        if r.code is not None:
            detail["code"] = r.code
        self._act(r.kind, inbox, zone, tags, detail)

    def _repeat(self, key: tuple[str, str, str], now: float) -> bool:
        """The same shopper, kind and tag within the holdoff is one interaction."""
        last = self._recent.get(key)
        self._recent[key] = now
        if len(self._recent) > _SEEN_IDS:
            self._recent = {k: v for k, v in self._recent.items()
                            if now - v < self.cfg.repeat_holdoff_s}
        return last is not None and now - last < self.cfg.repeat_holdoff_s

    def metrics(self) -> dict[str, float]:
        """The counters, plus ``reader_up`` when a reader is configured."""
        out: dict[str, float] = {k: float(v) for k, v in self.stats.items()}
        if self.cfg.device is not None:
            state = self.reader.stats()["state"] if self.reader is not None else "stopped"
            out["reader_up"] = 1.0 if state == "running" else 0.0
        return out
