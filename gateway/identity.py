"""Rotating token -> inbox pseudonym, from the per-epoch tables of the bundle
(docs/architecture.md#rotating-tokens).

The gateway never holds an identity key. A token resolves only within one epoch of the
gateway's clock (one epoch of skew tolerated either way); opted-out inboxes never
resolve, whatever tables an older bundle carried.

A store with 10,000 opted-in shoppers ships 80,000 entries, so the tables are held
compactly instead of as one ``dict[str, str]`` per epoch (~450 bytes of RSS an entry):
every token of every epoch is 16 characters of one string; one 32-bit word per entry
holds its inbox number and its epoch's position (the inboxes are one string too); one
open-addressing hash table of entry numbers finds it. The table hashes the token text
with ``hash(str)``: per process, but the table lives and is queried in one process.
A lookup compares the whole token text with the entry's (never a prefix or a hash of
it), so what resolves is exactly what the ``dict`` resolved. That is 20 bytes an entry
plus 8 of hash table: ~2.1 MiB live at 80,000 entries.

The per-advert path (:meth:`IdentityResolver.resolve`) is written for the
interpreter: the clock's epoch is checked against float bounds (``int(float)`` costs
more than the rest of the check), the arrays it reads come in one tuple, a token of the
clock's epoch returns inline, and the ranked search of every match runs only when two
epochs share a token (a 64-bit coincidence). Counted with cachegrind: ~7,900 machine
instructions a lookup against ~9,400 before this layout and ~4,300 for the dicts;
times are in README.md (``aislecast bench gateway_rss``).

A token that matches no entry at all (in the tables or the admitted ones) is handed to
``on_unknown`` when set: the gateway reports it to HQ, which admits a shopper seen in
the store for the first time (:mod:`gateway.first_visit`). A token of an entry outside
the clock's window, or of an opted-out shopper, is not unknown and is not reported.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Final

from aislecast.kernel.schema import TokenTable

__all__ = ["IdentityResolver"]

log = logging.getLogger("aislecast.gateway.identity")

_TOKEN_LEN: Final = 16  # 8-byte Eddystone-EID tokens as hex: the bundle's wire format
# Linear probing at this load: ~1.5 slots read for a hit, ~2.5 for a miss; a slot is
# 4 bytes, so a roomier table is cheap next to the 20 bytes an entry holds.
_MAX_LOAD: Final = 0.5
_MIN_SLOTS: Final = 8
_SHIFT: Final = 4  # log2(_TOKEN_LEN): entry e is text[e << 4:(e + 1) << 4]
_EPOCH_BITS: Final = 8  # meta = inbox number << 8 | the position of the entry's epoch
_EPOCH_MASK: Final = (1 << _EPOCH_BITS) - 1
_MAX_EPOCHS: Final = 1 << _EPOCH_BITS  # a bundle carries TOKEN_EPOCHS_AHEAD + 2
_MAX_INBOXES: Final = 1 << (32 - _EPOCH_BITS)
_NOT_HELD: Final = -1  # the position of an epoch the tables do not have
_UNRANKED: Final = 3  # worse than the clock's epoch (0), the one before (1), the one after (2)


class IdentityResolver:
    """Token -> inbox for the gateway's clock. :meth:`resolve` is the per-advert path:
    a token of the clock's epoch is found and returned inline; one of the epochs
    around it, or sharing its text with another epoch's, goes to :meth:`_ranked`."""

    __slots__ = ("_added", "_after", "_before", "_epoch_pos", "_hot", "_inbox_at", "_inbox_text", "_k",
                 "_meta", "_now", "_opted_out", "_shared", "_size", "_slots", "_text", "_window",
                 "on_unknown")

    def __init__(self) -> None:
        self._k = 9
        self._epoch_pos: dict[int, int] = {}  # epoch -> its position in the sorted epochs
        self._opted_out: set[str] = set()
        # token -> (epoch, inbox) of shoppers admitted by deltas since the bundle (a few:
        # looked up only when the bundle's tables miss; the next bundle carries them)
        self._added: dict[str, tuple[int, str]] = {}
        # called with (token, clock) for a token matching nothing (gateway.first_visit)
        self.on_unknown: Callable[[str, float], None] | None = None
        self._index([], array("I", [0]), [""])

    def _index(self, tokens: list[str], meta: array[int], inboxes: list[str]) -> None:
        """Entry ``e`` (from 1) is ``text[16e:16e+16]`` with ``meta[e]``; ``slots`` is
        the hash table of entry numbers (0: empty)."""
        self._text = " " * _TOKEN_LEN + "".join(tokens)  # entry 0 is "no entry"
        self._meta = meta
        self._inbox_text = "".join(inboxes)
        self._inbox_at = at = array("I", [0])
        at.extend(accumulate(len(i) for i in inboxes))
        self._size = size = max(_MIN_SLOTS, int(len(tokens) / _MAX_LOAD) + 1)
        self._slots = slots = array("I", bytes(4 * size))
        for entry, token in enumerate(tokens, 1):
            i = hash(token) % size
            while slots[i]:
                i = (i + 1) % size
            slots[i] = entry
        # whether a token is in more than one epoch's table: never, but for a 64-bit
        # collision; when none is, the first match is the only one
        self._shared = len(set(tokens)) != len(tokens)
        # positions of the clock's epoch, the one before and the one after, for the
        # epoch they were last worked out for
        self._now, self._before, self._after = _NOT_HELD, _NOT_HELD, _NOT_HELD
        self._window = (1.0, 0.0)  # no clock is in it: the first resolve works it out

    def load(self, k: int, tables: list[TokenTable], opt_outs: list[str]) -> None:
        by_epoch = {t.epoch: t.tokens for t in tables}  # an epoch given twice: the last table
        epochs = sorted(by_epoch)
        if len(epochs) > _MAX_EPOCHS:
            log.warning("token tables: %d epochs, only the last %d kept", len(epochs), _MAX_EPOCHS)
            epochs = epochs[-_MAX_EPOCHS:]
        number: dict[str, int] = {"": 0}  # inbox -> its number, whatever the epochs
        tokens: list[str] = []
        meta = array("I", [0])
        skipped = 0
        for pos, epoch in enumerate(epochs):
            for token, inbox in by_epoch[epoch].items():
                if len(token) != _TOKEN_LEN or not token.isascii():
                    skipped += 1
                    continue
                n = number.get(inbox)
                if n is None:
                    if len(number) == _MAX_INBOXES:
                        skipped += 1
                        continue
                    n = number[inbox] = len(number)
                tokens.append(token)
                meta.append(n << _EPOCH_BITS | pos)
        if skipped:
            log.warning("token tables: %d keys are not 16-character tokens, ignored", skipped)
        self._k = k
        self._epoch_pos = {e: pos for pos, e in enumerate(epochs)}
        self._opted_out = set(opt_outs)
        self._added = {}
        # the inboxes as one string, never one str each: an inbox string made while the
        # bundle's 80,000 token strings are alive sits between them and keeps their
        # allocator pools from being returned once the bundle is freed (~3 MiB measured)
        self._index(tokens, meta, list(number))

    def opt_out(self, inboxes: list[str]) -> None:
        self._opted_out.update(inboxes)  # the set _hot holds too

    def admit(self, inboxes: list[str], tables: list[TokenTable]) -> int:
        """Shoppers (re-)admitted by a delta, with their tokens (gateway.consent): they
        resolve from now on, whatever opt-out came before. Returns the tokens added."""
        self._opted_out.difference_update(inboxes)
        n = 0
        for t in tables:
            for token, inbox in t.tokens.items():
                if len(token) == _TOKEN_LEN and token.isascii():
                    self._added[token] = (t.epoch, inbox)
                    n += 1
        return n

    def forget(self, inboxes: list[str]) -> None:
        """Erased shoppers: never resolve again, and their added tokens are dropped."""
        gone = set(inboxes)
        self._opted_out |= gone
        self._added = {t: v for t, v in self._added.items() if v[1] not in gone}

    def _miss(self, token_hex: str, unix_now: float) -> str | None:
        """The bundle's tables do not have ``token_hex``: the admitted tokens may; a
        token neither has is unknown (reported to ``on_unknown``)."""
        hit = self._added.get(token_hex)
        if hit is None:
            if self.on_unknown is not None:
                self.on_unknown(token_hex, unix_now)
            return None
        epoch, inbox = hit
        if abs(epoch - (int(unix_now) >> self._k)) > 1 or inbox in self._opted_out:
            return None
        return inbox

    @property
    def epochs(self) -> list[int]:
        return sorted(self._epoch_pos)

    def _move_window(self, unix_now: float) -> None:
        epoch = int(unix_now) >> self._k
        pos = self._epoch_pos.get
        self._now, self._before, self._after = (
            pos(epoch, _NOT_HELD), pos(epoch - 1, _NOT_HELD), pos(epoch + 1, _NOT_HELD))
        # the clock's epoch as seconds, compared as floats: int(float) costs more
        self._window = (float(epoch << self._k), float((epoch + 1) << self._k))
        self._hot = (self._slots, self._text, self._size, self._meta, self._now, self._before,
                     self._after, self._shared, self._inbox_text, self._inbox_at, self._opted_out)

    def _ranked(self, token_hex: str, i: int) -> str | None:
        """Every entry of ``token_hex`` from slot ``i`` on: the one of the clock's epoch,
        else the epoch before, else the epoch after. Several entries share a token only
        if two epochs' tokens collide, a 64-bit coincidence."""
        slots, text, meta, size = self._slots, self._text, self._meta, self._size
        rank = {self._after: 2, self._before: 1, self._now: 0}
        rank.pop(_NOT_HELD, None)
        best, best_rank = 0, _UNRANKED
        while entry := slots[i]:
            if text.startswith(token_hex, entry << _SHIFT):
                r = rank.get(meta[entry] & _EPOCH_MASK, _UNRANKED)
                if r < best_rank:
                    best, best_rank = meta[entry], r
            i = (i + 1) % size
        if best_rank == _UNRANKED:
            return None
        n = best >> _EPOCH_BITS
        inbox = self._inbox_text[self._inbox_at[n]:self._inbox_at[n + 1]]
        return None if inbox in self._opted_out else inbox

    def resolve(self, token_hex: str, unix_now: float) -> str | None:
        if len(token_hex) != _TOKEN_LEN:
            return None
        start, end = self._window
        if not start <= unix_now < end:
            self._move_window(unix_now)
        slots, text, size, meta, now, before, after, shared, inbox_text, inbox_at, opted_out = \
            self._hot
        i = hash(token_hex) % size
        while entry := slots[i]:
            if text.startswith(token_hex, entry << _SHIFT):
                m = meta[entry]
                if (pos := m & _EPOCH_MASK) != now:
                    if shared:
                        return self._ranked(token_hex, i)
                    if pos not in (before, after):
                        return None
                n = m >> _EPOCH_BITS
                inbox = inbox_text[inbox_at[n]:inbox_at[n + 1]]
                return None if inbox in opted_out else inbox
            i = (i + 1) % size
        return self._miss(token_hex, unix_now)
