"""The gateway's hot path: every advert the scanner hears goes through :class:`AdvertRouter`.

Order of work, cheapest first (habluetooth's habit, STYLE "Hot path"):

1. Prefilter on a dictionary lookup and the first payload byte and length: Eddystone
   service data, or Apple manufacturer data shaped like an iBeacon. Everything else
   (Apple's other adverts, other vendors: 40 % of the benchmark mix) is counted and
   dropped after two dictionary lookups.
2. Fixed beacons are recognised by the bytes that identify them on air, looked up in
   the fleet's tables built from the bundle, so a planned beacon costs one slice and
   one lookup and no decoding; its status is stamped in place (:mod:`gateway.fleet`).
   Eddystone TLM goes to the fleet (decoded there; 5 % of traffic).
3. Shopper tokens (Eddystone-EID) resolve through a small memo in front of
   :class:`~gateway.identity.IdentityResolver`: a phone repeats its token at 1-10 Hz
   for a whole epoch (512 s), so the resolver (hex, three table probes, wall clock)
   runs about once per ``TOKEN_MEMO_S`` per token instead of per advert. Unknown tokens
   are memoised too. The memo is cleared on every bundle and delta (opt-outs).
4. Resolved sightings go to presence through the ``observe`` callback.

Time on this path is the advert's own monotonic stamp; the wall clock is read only on
a memo miss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Protocol

from edge.advert import Advertisement
from edge.frames import APPLE_COMPANY_ID, EDDYSTONE_UUID
from gateway.fleet import FleetHealth
from gateway.identity import IdentityResolver

__all__ = ["TOKEN_MEMO_MAX", "TOKEN_MEMO_S", "AdvertCounters", "AdvertRouter"]

# A memo entry lives 10 s: far inside a 512 s epoch and the one epoch of skew the
# resolver tolerates, so a token that stops resolving at an epoch edge is re-checked
# within 10 s; at 5 Hz that is one resolver call per 50 adverts.
TOKEN_MEMO_S: Final = 10.0
# Bounded: ~200 phones in a busy store, each with at most two live tokens; cleared
# whole when full (random-address junk cannot grow it without limit).
TOKEN_MEMO_MAX: Final = 4096

_EID, _UID, _TLM = 0x30, 0x00, 0x20


class AdvertCounters(Protocol):
    adverts: int
    adverts_decoded: int
    adverts_ignored: int
    tokens_unknown: int


Observe = Callable[[str, str, int, int, float], None]  # inbox, zone, rssi, tx@1m, ts


class AdvertRouter:
    __slots__ = ("_memo", "counters", "fleet", "identity", "observe", "receiver_tx", "receivers")

    def __init__(self, *, identity: IdentityResolver, fleet: FleetHealth, receivers: dict[str, str],
                 receiver_tx_power_1m: int, counters: AdvertCounters, observe: Observe) -> None:
        self.identity = identity
        self.fleet = fleet
        self.receivers = receivers  # receiver name -> zone it sits in
        self.receiver_tx = receiver_tx_power_1m
        self.counters = counters
        self.observe = observe
        self._memo: dict[bytes, tuple[str | None, float]] = {}

    def reset_tokens(self) -> None:
        self._memo.clear()

    def _resolve(self, token: bytes, ts: float) -> str | None:
        memo = self._memo
        if len(memo) >= TOKEN_MEMO_MAX:
            memo.clear()
        inbox = self.identity.resolve(token.hex(), time.time())
        memo[token] = (inbox, ts + TOKEN_MEMO_S)
        return inbox

    def __call__(self, adv: Advertisement) -> None:
        c = self.counters
        c.adverts += 1
        sd = adv.service_data
        svc = sd.get(EDDYSTONE_UUID) if sd else None
        if svc is not None and svc:
            kind = svc[0]
            n = len(svc)
            if kind == _EID and n == 10:
                c.adverts_decoded += 1
                token = svc[2:10]
                hit = self._memo.get(token)
                ts = adv.ts
                inbox = hit[0] if hit is not None and ts < hit[1] else self._resolve(token, ts)
                if inbox is None:
                    c.tokens_unknown += 1
                    return
                zone = self.receivers.get(adv.receiver)
                if zone is not None:
                    self.observe(inbox, zone, adv.rssi, self.receiver_tx, ts)
                return
            if kind == _UID and n in {18, 20}:
                c.adverts_decoded += 1
                st = self.fleet.by_uid.get(svc[2:18])
                if st is not None:
                    self.fleet.heard(st, adv.address, adv.rssi, adv.ts)
                return
            if kind == _TLM:
                c.adverts_decoded += 1
                self.fleet.telemetry(adv.address, svc, adv.ts)
                return
        md = adv.manufacturer_data
        mfr = md.get(APPLE_COMPANY_ID) if md else None
        if mfr is not None and len(mfr) == 23 and mfr[0] == 0x02 and mfr[1] == 0x15:
            c.adverts_decoded += 1
            st = self.fleet.by_ibeacon.get(mfr[2:22])
            if st is not None:
                self.fleet.heard(st, adv.address, adv.rssi, adv.ts)
            return
        c.adverts_ignored += 1
