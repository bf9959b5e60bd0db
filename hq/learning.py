"""HQ learning: shopper profiles, a small logistic regression, and bandit statistics.

From the event log HQ builds each shopper's profile (segments and loyalty tier from the
``profiles`` table, which :mod:`hq.migrations` creates; visits and a lead score,
:mod:`hq.lead_score`: repeated visits, dwell and recent engagement with offers raise
it; only for shoppers granting ``personalisation``, :mod:`hq.purposes`), fits a
logistic regression of "clicked or redeemed" on
:func:`~aislecast.kernel.campaign.features` of every offer published (but those to a
shopper without ``personalisation``; numpy, L2-regularised gradient descent), and
counts clicks per creative variant for the gateways' Thompson sampling. The result is a
:class:`~aislecast.kernel.campaign.Model` that rides in the next bundle
(``HqService.model``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiomqtt
import msgspec
import numpy as np
import numpy.typing as npt

from aislecast.kernel.campaign import FEATURES, ArmStats, Campaign, Model, Profile, features
from aislecast.kernel.counters import count, gauge
from aislecast.kernel.logs import get_logger
from hq.campaigns import allocate_budgets
from hq.lead_score import engagement, lead_score, visits_and_dwell
from hq.purposes import grants
from hq.service import HqService

__all__ = ["LearnStats", "fit_logistic", "learn_loop", "profiles", "set_profile", "train"]

log = get_logger(__name__)



def set_profile(service: HqService, inbox: str, segments: list[str], tier: str = "") -> None:
    service.db.execute(
        "INSERT INTO profiles(inbox, segments, tier) VALUES (?, ?, ?) ON CONFLICT (inbox)"
        " DO UPDATE SET segments = excluded.segments, tier = excluded.tier",
        (inbox, ",".join(segments), tier))


def profiles(service: HqService, *, now: float | None = None,
             only: str | None = None) -> dict[str, Profile]:
    """The profile of every opted-in shopper granting ``personalisation`` (hq.purposes),
    or of ``only``: nobody else gets one."""
    one: tuple[str, tuple[str, ...]] = ("", ()) if only is None else (" AND inbox = ?", (only,))
    seg = {r[0]: (r[1], r[2]) for r in service.db.query(
        "SELECT inbox, segments, tier FROM profiles WHERE 1 = 1" + one[0], one[1])}  # noqa: S608
    visits, dwell = visits_and_dwell(service.db, inbox=only)
    engaged = engagement(service.db, now=now, inbox=only)
    out: dict[str, Profile] = {}
    for inbox, consents in service.db.query(
            "SELECT inbox, consents FROM shoppers WHERE opted_out = 0" + one[0], one[1]):  # noqa: S608
        if not grants(consents, "personalisation"):
            continue
        s, tier = seg.get(inbox, ("", ""))
        out[inbox] = Profile(segments=[x for x in s.split(",") if x], tier=tier,
                             visits=visits[inbox],
                             lead=round(lead_score(visits[inbox], dwell[inbox],
                                                   engaged.get(inbox, 0.0)), 4),
                             consents=[x for x in consents.split(",") if x])
    return out


def fit_logistic(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], *, l2: float = 1e-2,
                 iters: int = 300, lr: float = 0.5) -> npt.NDArray[np.float64]:
    """Weights of ``P(y=1) = sigmoid(x @ w)`` by full-batch gradient descent with L2."""
    w = np.zeros(x.shape[1])
    n = max(len(y), 1)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) / n + l2 * w
        w -= lr * grad
    return w


def train(service: HqService, *, now: float | None = None) -> Model:
    """Fit the model from everything HQ has seen; sets and returns ``service.model``."""
    now = time.time() if now is None else now
    camps: dict[str, Campaign] = {c.id: c for c in service.campaigns()}
    profs = profiles(service, now=now)
    # a shopper without personalisation is not learnt from: their offers are left out
    unprofiled = {str(r[0]) for r in service.db.query("SELECT inbox, consents FROM shoppers")
                  if not grants(str(r[1]), "personalisation")}
    good = {r[0] for r in service.db.query(
        "SELECT DISTINCT offer FROM events WHERE kind IN ('offer_clicked', 'offer_redeemed')")}
    rows = service.db.query("SELECT offer, inbox, campaign, variant FROM events"
                            " WHERE kind = 'decision' AND reason = 'offer' AND offer IS NOT NULL")
    xs: list[list[float]] = []
    ys: list[float] = []
    arms: dict[str, list[float]] = {}
    for offer, inbox, cid, vid in rows:
        c = camps.get(cid)
        v = next((cr for cr in c.creatives if cr.id == vid), None) if c else None
        if c is None or v is None or inbox in unprofiled:
            continue
        hit = float(offer in good)
        xs.append(features(c, v, profs.get(inbox)))
        ys.append(hit)
        a = arms.setdefault(f"{cid}/{vid}", [1.0, 1.0])
        a[0 if hit else 1] += 1.0
    weights: list[float] = []
    if xs and 0 < sum(ys) < len(ys):
        weights = [round(float(w), 5) for w in fit_logistic(np.array(xs), np.array(ys))]
    elif xs:
        weights = [0.0] * len(FEATURES)
    model = Model(weights=weights, profiles=profs,
                  arms={k: ArmStats(a, b) for k, (a, b) in arms.items()},
                  trained_at=now, samples=len(xs))
    service.model = model
    return model


# A bundle carries the token tables of its store's shoppers (MBs for a big store): a new
# model alone is shipped at most this often; budget grants that changed go out at once.
MODEL_REPUBLISH_S = 600.0


@dataclass(slots=True)
class LearnStats:
    rounds: int = count("learning rounds completed")
    failures: int = count("learning rounds that failed")
    publish_failures: int = count("bundles the learner could not publish")
    republished: int = count("rounds that republished the stores' bundles")
    samples: int = gauge("offers the last model was trained on")


async def learn_loop(service: HqService, every_s: float = 60.0,
                     stats: LearnStats | None = None) -> None:
    """Retrain and top up budget grants every ``every_s``; republish the stores' bundles
    when a grant changed, or for a new model at most every ``MODEL_REPUBLISH_S``."""
    stats = LearnStats() if stats is None else stats
    model_shipped = float("-inf")
    while True:
        await asyncio.sleep(every_s)
        try:
            m = train(service)
            grants_changed = allocate_budgets(service)
            model_due = time.monotonic() - model_shipped >= MODEL_REPUBLISH_S
            if grants_changed or model_due:
                for store in service.store_ids():
                    try:  # one store's failure must not end HQ or starve the others
                        await service.publish_bundle(store)
                    except Exception:
                        stats.publish_failures += 1
                        log.exception("bundle publish failed", store=store)
                model_shipped = time.monotonic()
                stats.republished += 1
            stats.rounds += 1
            stats.samples = m.samples
            log.info("model trained", samples=m.samples, grants_changed=grants_changed,
                     published=bool(grants_changed or model_due))
        except (msgspec.ValidationError, RuntimeError, aiomqtt.MqttError):
            stats.failures += 1
            log.exception("learning round failed")
