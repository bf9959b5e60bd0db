"""The campaign model: one schema shared by HQ, the signed bundle and every gateway.

A campaign says *when* (schedule: absolute start/end plus weekly or dated windows in
the store's time zone), *where* (stores, zones, product tags), *on what* (triggers),
*for whom* (audience), *what* (creative variants), *how long* (offer validity) and *how
much* (caps, budget, holdout, priority). Enumerated fields are plain strings on the wire
so that one campaign a gateway does not understand is refused on its own, with a
reason, instead of making the whole bundle undecodable; :func:`check_campaign` is the
single rule book used by HQ (refuse with 422) and by gateways (skip and report).
``attribution`` (how HQ measures lift) and ``auto_pause`` (rules that pause the
campaign) are HQ's alone, checked by :func:`check_hq_settings` at HQ only.

``Model`` carries the ranking model HQ trains (logistic weights, per-shopper features,
bandit statistics per creative variant); :func:`features` is the feature map both
sides use, so HQ trains exactly what gateways score.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo

import msgspec

__all__ = [
    "CAMPAIGN_ENGINE",
    "FEATURES",
    "FORMATS",
    "LEAD_FIELDS",
    "MAX_ATTRIBUTION_IDS",
    "MAX_ATTRIBUTION_S",
    "MAX_LEAD_FIELDS",
    "MAX_LEAD_VALUE",
    "MAX_REFUSALS_WINDOW_S",
    "MAX_VALIDITY_S",
    "PAUSE_RULE_KINDS",
    "SCENARIOS",
    "STATUSES",
    "TRIGGER_KINDS",
    "ArmStats",
    "Attribution",
    "Audience",
    "Budget",
    "Campaign",
    "Caps",
    "Creative",
    "FormField",
    "Model",
    "PauseRule",
    "PausedBy",
    "Profile",
    "Schedule",
    "Trigger",
    "TriggerKind",
    "Window",
    "check_campaign",
    "check_hq_settings",
    "features",
    "minute_of",
]

# Campaign features a gateway must understand: HQ stamps campaigns with the engine level
# they need; a gateway older than that refuses the campaign (never half-applies it).
CAMPAIGN_ENGINE = 2

TriggerKind = str  # one of TRIGGER_KINDS; a plain str so unknown kinds are refused per campaign
TRIGGER_KINDS = frozenset({"enter", "dwell", "exit", "tap", "scan", "schedule", "flash"})
FORMATS = ("banner", "button", "landing", "coupon", "lead")
# The ranking features name these formats only: FEATURES' layout (the model's weights)
# stays the same across versions; a lead creative has no format feature of its own.
_FEATURE_FORMATS = ("banner", "button", "landing", "coupon")
# A lead creative's form (docs/architecture.md#leads): fields from this fixed set only.
LEAD_FIELDS = frozenset({"name", "email", "phone", "preferred_time", "party_size",
                         "consent_contact", "note"})
MAX_LEAD_FIELDS = 6
MAX_LABEL = 80
MAX_LEAD_VALUE = 200
STATUSES = frozenset({"draft", "scheduled", "live", "paused", "ended"})
SCENARIOS = ("planned", "anticipated", "location", "predictive", "interaction", "flash")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Window(msgspec.Struct, frozen=True):
    """A local-time window: ``start``-``end`` (HH:MM, end exclusive, ``24:00`` allowed) on
    ISO weekdays ``days`` (1 = Monday; empty: every day) and/or ``dates`` (YYYY-MM-DD)."""

    start: str = "00:00"
    end: str = "24:00"
    days: list[int] = msgspec.field(default_factory=list)
    dates: list[str] = msgspec.field(default_factory=list)

    def minutes(self) -> tuple[int, int]:
        return minute_of(self.start), minute_of(self.end)

    def covers(self, weekday: int, date: str, minute: int) -> bool:
        if self.days and weekday not in self.days:
            return False
        if self.dates and date not in self.dates:
            return False
        lo, hi = self.minutes()
        return lo <= minute < hi


def minute_of(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Schedule(msgspec.Struct, frozen=True):
    """Absolute UTC ``start``/``end`` (epoch s; ``None`` open) and local ``windows`` (empty:
    always) in ``tz`` (``None``: the store's time zone)."""

    start: float | None = None
    end: float | None = None
    windows: list[Window] = msgspec.field(default_factory=list)
    tz: str | None = None


class Trigger(msgspec.Struct, frozen=True):
    kind: TriggerKind = "enter"
    zones: list[str] = msgspec.field(default_factory=list)  # empty: any zone
    min_dwell_s: float = 0.0
    tags: list[str] = msgspec.field(default_factory=list)  # NFC/QR tag or product ids; empty: any


class Audience(msgspec.Struct, frozen=True):
    """Who may get the campaign; every non-empty list must match (segments: any of)."""

    segments: list[str] = msgspec.field(default_factory=list)
    loyalty_tiers: list[str] = msgspec.field(default_factory=list)
    min_visits: int = 0
    purposes: list[str] = msgspec.field(default_factory=list)  # consents required beyond `purpose`


class FormField(msgspec.Struct, frozen=True, omit_defaults=True):
    """One field of a lead creative's form: ``name`` from LEAD_FIELDS, shown as ``label``."""

    name: str
    label: str = ""
    required: bool = False


class Creative(msgspec.Struct, frozen=True):
    id: str
    title: str
    body: str = ""
    format: str = "banner"  # banner, button, landing, coupon, lead
    cta: str = "Open"
    url: str | None = None
    image_url: str | None = None
    coupon_code: str | None = None
    form: list[FormField] = msgspec.field(default_factory=list)  # a lead creative's form


class Caps(msgspec.Struct, frozen=True):
    """Frequency caps; ``None`` means no cap, 0 is refused (pause the campaign instead)."""

    per_shopper: int = 1  # offers of this campaign per shopper per visit
    per_campaign: int | None = None  # of this campaign per shopper, ever
    per_day: int | None = None  # of this campaign per shopper per local day
    per_visit_all: int | None = None  # of any campaign per shopper per visit
    min_gap_s: float = 0.0  # between any two offers to one shopper
    quiet: list[Window] = msgspec.field(default_factory=list)  # local quiet hours: no offers


class Budget(msgspec.Struct, frozen=True):
    """Spend limit. ``grants`` are HQ's cumulative allowances per gateway id (``*``: any
    other gateway); their sum never exceeds what is left, so a store cannot overspend."""

    kind: str = "none"  # none, impressions, redemptions
    total: int = 0
    grants: dict[str, int] = msgspec.field(default_factory=dict)


class Attribution(msgspec.Struct, frozen=True):
    """How HQ measures lift (HQ only; gateways ignore it): a shopper converts with a till
    purchase within ``window_s`` after their first decision, and lift is shown once both
    arms (offered, holdout) have ``min_per_arm`` shoppers. ``products`` and
    ``categories`` name the purchase lines that count (a line whose product or whose
    category is listed: what the campaign promotes); both empty, any purchase does."""

    window_s: float = 86_400.0
    min_per_arm: int = 30
    products: list[str] = msgspec.field(default_factory=list)
    categories: list[str] = msgspec.field(default_factory=list)


PAUSE_RULE_KINDS = frozenset({"dismiss_rate", "ctr_floor", "budget_pace", "code_refusals"})
#: the longest window a code_refusals rule counts over (a day)
MAX_REFUSALS_WINDOW_S = 86_400.0


class PauseRule(msgspec.Struct, frozen=True, omit_defaults=True):
    """An auto-pause rule HQ evaluates (hq.autopause; gateways ignore it):

    - ``dismiss_rate``: dismissals per delivery ``above`` a share, once ``after`` deliveries;
    - ``ctr_floor``: clicks per delivery ``below`` a share, once ``after`` deliveries;
    - ``budget_pace``: budget spent ahead of the schedule's elapsed share by ``ahead_by``
      (needs a budget and a schedule with start and end);
    - ``code_refusals``: more than ``refusals`` of the campaign's till codes refused as
      used, from another store or with a tag that fails (a misprint or tampering) in
      the last ``within_s`` seconds."""

    kind: str
    above: float | None = None
    below: float | None = None
    after: int = 0
    ahead_by: float | None = None
    refusals: int | None = None
    within_s: float | None = None


class PausedBy(msgspec.Struct, frozen=True):
    """Set by HQ when an auto-pause rule paused the campaign: which, when, on what numbers."""

    rule: PauseRule
    at: float
    numbers: dict[str, float] = msgspec.field(default_factory=dict)
    reason: str = ""


class Campaign(msgspec.Struct, frozen=True):
    id: str
    name: str
    stores: list[str]
    creatives: list[Creative]
    trigger: Trigger = msgspec.field(default_factory=Trigger)
    schedule: Schedule = msgspec.field(default_factory=Schedule)
    scenario: str = "location"
    status: str = "live"  # draft, scheduled, live, paused, ended
    validity_s: float = 900.0
    caps: Caps = msgspec.field(default_factory=Caps)
    priority: int = 0
    holdout_pct: float = 0.0
    purpose: str = "offers"  # consent purpose required
    triggers: list[Trigger] = msgspec.field(default_factory=list)  # more triggers beyond `trigger`
    audience: Audience = msgspec.field(default_factory=Audience)
    budget: Budget = msgspec.field(default_factory=Budget)
    countdown: bool = False  # time-limited: the phone shows a countdown to expires_at
    engine: int = 1  # campaign engine level needed to apply it (see CAMPAIGN_ENGINE)
    attribution: Attribution = msgspec.field(default_factory=Attribution)  # HQ's lift settings
    auto_pause: list[PauseRule] = msgspec.field(default_factory=list)  # HQ's auto-pause rules
    paused_by: PausedBy | None = None  # set by HQ's auto-pause; cleared when resumed

    def all_triggers(self) -> list[Trigger]:
        return [self.trigger, *self.triggers]


class Profile(msgspec.Struct, frozen=True, omit_defaults=True):
    """What ranking and audience rules know about one pseudonymous inbox."""

    segments: list[str] = msgspec.field(default_factory=list)
    tier: str = ""
    visits: int = 0
    lead: float = 0.0  # 0..1, raised by repeated visits and dwell
    consents: list[str] = msgspec.field(default_factory=list)


class ArmStats(msgspec.Struct, frozen=True, array_like=True):
    """Beta posterior of one creative variant's click rate: ``(clicks + 1, misses + 1)``."""

    alpha: float = 1.0
    beta: float = 1.0


class Model(msgspec.Struct, frozen=True):
    """Ranking model in the bundle: ``weights`` over :data:`FEATURES`, per-inbox
    ``profiles`` and bandit ``arms`` keyed ``"campaign/variant"``."""

    weights: list[float] = msgspec.field(default_factory=list)
    profiles: dict[str, Profile] = msgspec.field(default_factory=dict)
    arms: dict[str, ArmStats] = msgspec.field(default_factory=dict)
    trained_at: float = 0.0
    samples: int = 0


FEATURES: tuple[str, ...] = (
    "bias",
    *(f"scenario:{s}" for s in SCENARIOS),
    *(f"format:{f}" for f in _FEATURE_FORMATS),
    "lead",
    "segment_match",
    "log_visits",
    "priority",
)
_INDEX = {name: i for i, name in enumerate(FEATURES)}


def features(c: Campaign, variant: Creative, p: Profile | None) -> list[float]:
    """The feature vector of (shopper profile, campaign, variant), aligned with FEATURES."""
    x = [0.0] * len(FEATURES)
    x[0] = 1.0
    if (i := _INDEX.get(f"scenario:{c.scenario}")) is not None:
        x[i] = 1.0
    if (i := _INDEX.get(f"format:{variant.format}")) is not None:
        x[i] = 1.0
    if p is not None:
        x[_INDEX["lead"]] = p.lead
        x[_INDEX["segment_match"]] = float(bool(set(p.segments) & set(c.audience.segments)))
        x[_INDEX["log_visits"]] = math.log1p(p.visits)
    x[_INDEX["priority"]] = c.priority / 10
    return x


def _check_window(where: str, w: Window, problems: list[str]) -> bool:
    ok = True
    for name, v in (("start", w.start), ("end", w.end)):
        if not _HHMM.match(v):
            problems.append(f"{where}: {name} {v!r} is not HH:MM")
            ok = False
    if ok and minute_of(w.start) >= minute_of(w.end):
        problems.append(f"{where}: start {w.start} is not before end {w.end}"
                        " (split an overnight window in two)")
        ok = False
    if bad := [d for d in w.days if not 1 <= d <= 7]:
        problems.append(f"{where}: days {bad} are not ISO weekdays 1-7")
    if bad_dates := [d for d in w.dates if not _DATE.match(d)]:
        problems.append(f"{where}: dates {bad_dates} are not YYYY-MM-DD")
    return ok


def _weekdays(w: Window) -> set[int]:
    days = set(w.days or range(1, 8))
    if w.dates:
        try:
            days &= {dt.date.fromisoformat(d).isoweekday() for d in w.dates}
        except ValueError:
            return days  # reported as a bad date by _check_window
    return days


def _overlap(a: Window, b: Window) -> bool:
    if not _weekdays(a) & _weekdays(b):
        return False
    if a.dates and b.dates and not set(a.dates) & set(b.dates):
        return False
    (a0, a1), (b0, b1) = a.minutes(), b.minutes()
    return a0 < b1 and b0 < a1


def _check_tz(where: str, tz: str, problems: list[str]) -> None:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: unknown time zone {tz!r}")


MAX_VALIDITY_S = 7 * 86_400.0  # the longest an offer may stay valid: one week


def _check_form(cr: Creative) -> list[str]:
    """A lead creative needs a form of 1..MAX_LEAD_FIELDS known, distinct fields with
    short labels; any other format carries no form."""
    at = f"creatives[{cr.id}].form"
    if cr.format != "lead":
        return [f"{at}: only a lead creative has a form"] if cr.form else []
    if not 1 <= len(cr.form) <= MAX_LEAD_FIELDS:
        return [f"{at}: a lead form needs 1 to {MAX_LEAD_FIELDS} fields, not {len(cr.form)}"]
    p: list[str] = []
    names = [f.name for f in cr.form]
    if len(set(names)) != len(names):
        p.append(f"{at}: field names repeat")
    for i, f in enumerate(cr.form):
        if f.name not in LEAD_FIELDS:
            p.append(f"{at}[{i}].name: unknown field {f.name[:40]!r}; one of "
                     f"{', '.join(sorted(LEAD_FIELDS))}")
        if len(f.label) > MAX_LABEL:
            p.append(f"{at}[{i}].label: {len(f.label)} characters, at most {MAX_LABEL}")
    return p


def check_campaign(c: Campaign, zones: set[str] | None = None, *,
                   engine: int = CAMPAIGN_ENGINE) -> list[str]:
    """Every problem with ``c`` (empty when valid). ``zones``: known zone ids, if known."""
    p: list[str] = []
    if c.engine > engine:
        p.append(f"engine: campaign needs engine {c.engine}, this side runs {engine}")
    if not c.id or not c.stores:
        p.append("id/stores: a campaign needs an id and at least one store")
    if c.status not in STATUSES:
        p.append(f"status: unknown status {c.status!r}")
    if not c.creatives:
        p.append("creatives: at least one creative variant is needed")
    ids = [cr.id for cr in c.creatives]
    if len(set(ids)) != len(ids):
        p.append("creatives: variant ids repeat")
    for cr in c.creatives:
        if cr.format not in FORMATS:
            p.append(f"creatives[{cr.id}]: unknown format {cr.format!r}")
        if cr.format == "coupon" and not cr.coupon_code:
            p.append(f"creatives[{cr.id}]: a coupon needs a coupon_code")
        p.extend(_check_form(cr))
    for i, t in enumerate(c.all_triggers()):
        if t.kind not in TRIGGER_KINDS:
            p.append(f"trigger[{i}]: unknown kind {t.kind!r}; one of {', '.join(sorted(TRIGGER_KINDS))}")
        if t.min_dwell_s < 0 or (t.kind == "dwell" and t.min_dwell_s <= 0):
            p.append(f"trigger[{i}]: a dwell trigger needs min_dwell_s > 0")
        if zones is not None and (unknown := sorted(set(t.zones) - zones)):
            p.append(f"trigger[{i}]: unknown zones {unknown}")
    s = c.schedule
    if s.start is not None and s.end is not None and s.start >= s.end:
        p.append("schedule: start is not before end")
    if s.tz is not None:
        _check_tz("schedule.tz", s.tz, p)
    good = [w for i, w in enumerate(s.windows) if _check_window(f"schedule.windows[{i}]", w, p)]
    for i, a in enumerate(good):
        p.extend(f"schedule.windows: {a.start}-{a.end} overlaps {b.start}-{b.end}"
                 for b in good[i + 1:] if _overlap(a, b))
    k = c.caps
    for name in ("per_shopper", "per_campaign", "per_day", "per_visit_all"):
        v = getattr(k, name)
        if v is not None and v < 1:
            p.append(f"caps.{name}: {v} would never offer (use None for no cap, or pause)")
    if k.min_gap_s < 0:
        p.append("caps.min_gap_s: negative")
    for i, w in enumerate(k.quiet):
        _check_window(f"caps.quiet[{i}]", w, p)
    if not 0 < c.validity_s <= MAX_VALIDITY_S:
        p.append(f"validity_s: {c.validity_s} outside (0, {MAX_VALIDITY_S:.0f}] seconds "
                 "(an offer is for this visit or this week, and MQTT expiry is 32-bit)")
    for i, cr in enumerate(c.creatives):
        for name in ("url", "image_url"):
            link = getattr(cr, name)
            if link is not None and not link.startswith(("https://", "http://")):
                p.append(f"creatives[{i}].{name}: {link[:40]!r} is not an http(s) link "
                         "(phones open it: no javascript:, data: or app schemes)")
    if not 0 <= c.holdout_pct < 100:
        p.append(f"holdout_pct: {c.holdout_pct} outside [0, 100)")
    b = c.budget
    if b.kind not in {"none", "impressions", "redemptions"}:
        p.append(f"budget.kind: unknown {b.kind!r}")
    elif b.kind != "none" and b.total < 1:
        p.append("budget.total: a budget needs total >= 1")
    return p


MAX_ATTRIBUTION_S = 30 * 86_400.0  # a purchase a month after the offer is not its doing
MAX_ATTRIBUTION_IDS = 200  # products or categories one campaign's lift counts
_LINE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # as a till basket line names them (hq.till)


def check_hq_settings(c: Campaign) -> list[str]:
    """Problems with the settings only HQ acts on (attribution for lift, auto-pause
    rules). Not part of :func:`check_campaign`: a gateway ignores them, so a rule kind
    newer than the gateway never makes it refuse the campaign."""
    p: list[str] = []
    _check_attribution(c.attribution, p)
    for i, r in enumerate(c.auto_pause):
        _check_rule(f"auto_pause[{i}]", r, c, p)
    if sum(r.kind == "code_refusals" for r in c.auto_pause) > 1:
        p.append("auto_pause: at most one code_refusals rule (one window per campaign)")
    return p


def _check_attribution(a: Attribution, p: list[str]) -> None:
    if not 0 < a.window_s <= MAX_ATTRIBUTION_S:
        p.append(f"attribution.window_s: {a.window_s} outside (0, {MAX_ATTRIBUTION_S:.0f}] seconds")
    if not 10 <= a.min_per_arm <= 1_000_000:
        p.append(f"attribution.min_per_arm: {a.min_per_arm} outside [10, 1000000] shoppers "
                 "(fewer makes the interval meaningless)")
    for name, ids in (("products", a.products), ("categories", a.categories)):
        if len(ids) > MAX_ATTRIBUTION_IDS:
            p.append(f"attribution.{name}: {len(ids)} entries, at most {MAX_ATTRIBUTION_IDS}")
        if bad := [i for i in ids if not _LINE_ID.fullmatch(i)]:
            p.append(f"attribution.{name}: {bad[0][:40]!r} is not a till line id"
                     " (1-64 of A-Z a-z 0-9 . _ : -)")


def _share(where: str, name: str, v: float | None, p: list[str]) -> None:
    if v is None:
        p.append(f"{where}: needs {name}")
    elif not 0 <= v <= 1:
        p.append(f"{where}.{name}: {v} is not a share in [0, 1]")


def _check_rule(where: str, r: PauseRule, c: Campaign, p: list[str]) -> None:
    if r.kind not in PAUSE_RULE_KINDS:
        p.append(f"{where}: unknown kind {r.kind!r} (one of {sorted(PAUSE_RULE_KINDS)})")
        return
    if r.after < 0:
        p.append(f"{where}.after: negative")
    if r.kind == "dismiss_rate":
        _share(where, "above", r.above, p)
    elif r.kind == "ctr_floor":
        _share(where, "below", r.below, p)
    elif r.kind == "code_refusals":
        if r.refusals is None or r.within_s is None:
            p.append(f"{where}: code_refusals needs refusals and within_s")
        else:
            if not 1 <= r.refusals <= 1_000_000:
                p.append(f"{where}.refusals: {r.refusals} outside [1, 1000000] codes")
            if not 0 < r.within_s <= MAX_REFUSALS_WINDOW_S:
                p.append(f"{where}.within_s: {r.within_s} outside (0, "
                         f"{MAX_REFUSALS_WINDOW_S:.0f}] seconds")
    else:
        _share(where, "ahead_by", r.ahead_by, p)
        if c.budget.kind == "none" or c.schedule.start is None or c.schedule.end is None:
            p.append(f"{where}: budget_pace needs a budget and a schedule with start and end")
