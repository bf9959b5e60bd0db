"""Rotating token -> inbox pseudonym, from the per-epoch tables of the bundle
(docs/architecture.md#rotating-tokens).

The gateway never holds an identity key. A token resolves only within one epoch of the
gateway's clock (one epoch of skew tolerated either way); opted-out inboxes never
resolve, whatever tables an older bundle carried.
"""

from __future__ import annotations

from aislecast.kernel.schema import TokenTable

__all__ = ["IdentityResolver"]


class IdentityResolver:
    def __init__(self) -> None:
        self._tables: dict[int, dict[str, str]] = {}
        self._k = 9
        self._opted_out: set[str] = set()

    def load(self, k: int, tables: list[TokenTable], opt_outs: list[str]) -> None:
        self._k = k
        self._tables = {t.epoch: t.tokens for t in tables}
        self._opted_out = set(opt_outs)

    def opt_out(self, inboxes: list[str]) -> None:
        self._opted_out.update(inboxes)

    @property
    def epochs(self) -> list[int]:
        return sorted(self._tables)

    def resolve(self, token_hex: str, unix_now: float) -> str | None:
        epoch = int(unix_now) >> self._k
        for e in (epoch, epoch - 1, epoch + 1):
            table = self._tables.get(e)
            if table is None:
                continue
            inbox = table.get(token_hex)
            if inbox is not None:
                if inbox in self._opted_out:
                    break
                return inbox
        return None
