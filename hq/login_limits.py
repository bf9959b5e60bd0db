"""How many wrong passwords the console's login takes before it refuses to try (429).

Failed logins are counted in a sliding window (:attr:`LoginLimits.window_s`, 15 min) on
three keys, and a login is refused *before* its password is checked (so a refused guess
costs no argon2 work and tells nothing) while:

- its (account, client address) pair has :attr:`~LoginLimits.per_pair` failures (5):
  one address guessing one account. This is the tight bound, and it locks out only that
  address: the account's owner elsewhere logs in as usual;
- its address has :attr:`~LoginLimits.per_address` failures on any accounts (30): one
  address spraying many names;
- its account has :attr:`~LoginLimits.per_account` failures from all addresses (50) *and*
  this address has failed on it at least once: a distributed guess at one account then
  gets one wrong guess per address per window, while an address that has not failed
  (the owner's, usually) is still let in, so nobody can lock a user out by failing on
  purpose from elsewhere.

An attempt counts as a failure from the moment it is let through (:meth:`LoginLimiter.attempt`)
until its password proves right (:meth:`LoginLimiter.succeeded` then clears its pair and
takes it back from the other two), so a burst of parallel guesses cannot all pass the
check while the first are still being verified. Refused attempts are not counted (they
do not extend the lock). The answer carries ``Retry-After``: the seconds until the window has
room again. The counts live in HQ's memory (a restart forgets them, which only helps the
owner) and at most :attr:`~LoginLimits.max_keys` keys are kept: expired ones go first,
then the oldest. The client address is the TCP peer's; behind a reverse proxy every
login shares the proxy's address, so the per-address bound then applies to all of them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = ["LoginLimiter", "LoginLimits", "Verdict"]

_NAME_KEPT: Final = 64  # characters of a tried name kept as a key (names are at most 64)


@dataclass(frozen=True, slots=True)
class LoginLimits:
    per_pair: int = 5
    per_address: int = 30
    per_account: int = 50
    window_s: float = 15 * 60.0
    max_keys: int = 10_000


class Verdict(NamedTuple):
    """A refusal: which bound (``pair``, ``address``, ``account``) and for how long."""

    bound: str
    retry_after_s: int


class LoginLimiter:
    """``attempt`` before the password is checked, ``succeeded`` when it was right."""

    def __init__(self, limits: LoginLimits = LoginLimits(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._fails: dict[tuple[str, ...], deque[float]] = {}

    def _recent(self, key: tuple[str, ...], now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.limits.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def _wait(self, q: deque[float], bound: int, now: float) -> int:
        """Seconds until fewer than ``bound`` of ``q``'s failures are in the window."""
        return max(1, math.ceil(q[-bound] + self.limits.window_s - now))

    @staticmethod
    def _keys(name: str, address: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        name = name[:_NAME_KEPT]
        return ("pair", name, address), ("address", address), ("account", name)

    def check(self, name: str, address: str) -> Verdict | None:
        """None when this login may be tried now."""
        now, lim = self.clock(), self.limits
        pair_key, address_key, account_key = self._keys(name, address)
        pair, by_address = self._recent(pair_key, now), self._recent(address_key, now)
        account = self._recent(account_key, now)
        if len(pair) >= lim.per_pair:
            return Verdict("pair", self._wait(pair, lim.per_pair, now))
        if len(by_address) >= lim.per_address:
            return Verdict("address", self._wait(by_address, lim.per_address, now))
        if len(account) >= lim.per_account and pair:
            # until this address's failure leaves the window or the account's count drops
            return Verdict("account", min(self._wait(pair, 1, now),
                                          self._wait(account, lim.per_account, now)))
        return None

    def attempt(self, name: str, address: str) -> Verdict | None:
        """A refusal, or None: then this attempt is counted as failed until :meth:`succeeded`."""
        verdict = self.check(name, address)
        if verdict is None:
            now = self.clock()
            for key in self._keys(name, address):
                q = self._fails.pop(key, None) or deque()
                q.append(now)
                self._fails[key] = q  # re-inserted: the dict's order is least recently failed first
            self._bound(now)
        return verdict

    def succeeded(self, name: str, address: str) -> None:
        """The password was right: the pair starts afresh and the attempt is taken back."""
        pair, *others = self._keys(name, address)
        self._fails.pop(pair, None)
        for key in others:
            q = self._fails.get(key)
            if q:
                q.pop()
            if not q:
                self._fails.pop(key, None)

    def _bound(self, now: float) -> None:
        if len(self._fails) <= self.limits.max_keys:
            return
        for key in list(self._fails):
            self._recent(key, now)  # drops the key once all its failures expired
        while len(self._fails) > self.limits.max_keys:
            del self._fails[next(iter(self._fails))]

    def __len__(self) -> int:
        return len(self._fails)
