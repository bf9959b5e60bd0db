"""What the ``personalisation`` and ``analytics`` purposes change at HQ (hq.consent).

* ``personalisation``: a shopper without it has no profile: :mod:`hq.learning` neither
  builds one nor learns from their offers, bundles and admitting deltas carry none
  (:meth:`hq.service.HqService.build_bundle`, ``shopper_profiles``), and withdrawing it
  sends an ``unprofiled`` delta to their stores (:mod:`hq.rights`), whose gateways
  then rank and target them as an anonymous shopper (:mod:`gateway.consent`).
* ``analytics``: a shopper without it has the events ingested after the withdrawal
  stored without their inbox (:func:`anonymous`, as erasure leaves events), so they
  are counted, rolled up, but linked to nobody (:mod:`hq.ingest`).

See docs/architecture.md#consent-and-data-rights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import msgspec

from aislecast.kernel.schema import Event
from hq.db import marks

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["anonymous", "granting", "grants", "lacking"]

_CHUNK: Final = 500


def grants(consents: str, purpose: str) -> bool:
    """Whether a ``shoppers.consents`` comma list grants ``purpose``."""
    return purpose in consents.split(",")


def _consents(db: HqDb, inboxes: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(inboxes))
    out: dict[str, str] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        out.update((str(r[0]), str(r[1])) for r in db.query(
            "SELECT inbox, consents FROM shoppers"  # noqa: S608 - marks only
            f" WHERE inbox IN ({marks(len(chunk))})", chunk))
    return out


def granting(db: HqDb, inboxes: Iterable[str], purpose: str) -> set[str]:
    """Those of ``inboxes`` that are shoppers granting ``purpose`` now."""
    return {i for i, c in _consents(db, inboxes).items() if grants(c, purpose)}


def lacking(db: HqDb, inboxes: Iterable[str], purpose: str) -> set[str]:
    """Those of ``inboxes`` that are shoppers *not* granting ``purpose`` now (an inbox HQ
    does not have is in neither set)."""
    return {i for i, c in _consents(db, inboxes).items() if not grants(c, purpose)}


def anonymous(e: Event) -> Event:
    """``e`` without the pseudonym (the rest, counts and rollup dimensions, as it was)."""
    return e if e.inbox is None else msgspec.structs.replace(e, inbox=None)
