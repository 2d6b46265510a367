"""The conduct guard: may we contact this person on this channel now?

Rule sets (CN, US, UK) are data files under `rulesets/`; each rule has an id that every decision
cites. `decide` is pure: it takes the request, the person's contact history (all their loans
and agencies) and the rule set, and answers allowed, deferred until the first allowed moment,
or refused. Nothing is ever dropped silently: a deferred contact is asked again at that moment.
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Channel = Literal["sms", "email", "letter", "phone", "visit", "agency"]
CHANNELS: tuple[str, ...] = ("sms", "email", "letter", "phone", "visit", "agency")
Purpose = Literal["escalation", "arrangement", "transactional", "agency", "locate"]

# Rules every rule set has; their ids appear in decisions like the rule set's own.
GEN_STOP = "GEN-STOP"  # collection stopped (bankruptcy, death, cease-contact)
GEN_HOLD = "GEN-HOLD"  # hardship breathing space or an open dispute
GEN_PAUSED = "GEN-PAUSED"  # escalation paused by an arrangement
GEN_OPT_OUT = "GEN-OPT-OUT"  # the borrower opted out of this channel
GEN_TRANSACTIONAL = "GEN-TRANSACTIONAL"  # confirmations are not collection contacts
GEN_ALLOWED = "GEN-ALLOWED"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HoursRule(_Strict):
    """Contact only between `start` and `end`, borrower's local time, not on holidays."""

    id: str
    start: time
    end: time
    channels: list[Channel] = ["sms", "email", "phone", "visit", "agency"]
    holidays: str | None = None  # calendar file name under rulesets/holidays/
    holidays_id: str = ""

    @model_validator(mode="after")
    def _window(self) -> HoursRule:
        if not self.start < self.end:
            raise ValueError("hours: start must be before end")
        return self


class CapRule(_Strict):
    """At most `max` contacts on `channels` in any rolling `window_hours`. `count` counts
    attempts or only connected ones (a conversation); `action` defers or refuses the excess."""

    id: str
    channels: list[Channel]
    max: int = Field(ge=0)
    window_hours: int = Field(ge=1)
    count: Literal["attempts", "connected"] = "attempts"
    action: Literal["defer", "refuse"] = "defer"


class QuietRule(_Strict):
    """No contact on `channels` within `days` after a conversation (e.g. Regulation F)."""

    id: str
    channels: list[Channel]
    days: int = Field(ge=1)
    action: Literal["defer", "refuse"] = "refuse"


class RuleSet(_Strict):
    """A jurisdiction's conduct rules."""

    name: str
    description: str = ""
    retention_years: int = Field(ge=1)
    hours: HoursRule
    caps: list[CapRule] = []
    quiet: list[QuietRule] = []
    opt_out_required: list[Channel] = []  # messages on these channels carry an opt-out line
    opt_out_id: str = ""
    third_party_id: str = ""

    def rule_ids(self) -> list[str]:
        ids = [self.hours.id, *(c.id for c in self.caps), *(q.id for q in self.quiet)]
        return [i for i in ids if i]


class ContactRequest(BaseModel):
    """A contact the workflow (or an agency) wants to make now."""

    borrower_id: str
    loan_id: str
    channel: Channel
    purpose: Purpose = "escalation"
    at: datetime
    timezone: str
    key: str = ""


class PastContact(BaseModel):
    """A contact already made to the person (any loan, any agency)."""

    channel: Channel
    at: datetime
    connected: bool = False


class Situation(BaseModel):
    """What the loan's state says about contacting now."""

    stopped: bool = False
    held: bool = False  # hardship or dispute
    paused: bool = False  # an arrangement pauses escalation
    opted_out: list[str] = []


class GuardDecision(BaseModel):
    """Allowed now, deferred until `at`, or refused; `rule` is the id that decided."""

    verdict: Literal["allowed", "deferred", "refused"]
    rule: str
    at: datetime
    reason: str = ""
    decided_at: datetime | None = None
    """When the guard decided (business time); the workflow's clock moves on to it."""


def parse_ruleset(text: str, source: str, overrides: dict[str, Any] | None = None) -> RuleSet:
    """Validate a rule set's TOML text with `overrides` merged into its tables; `source` names
    the file in error messages. (`infra.loaders.load_ruleset` reads the file.)"""
    data = _merge(tomllib.loads(text), overrides or {})
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{source}: {exc}") from exc


def parse_holidays(text: str) -> frozenset[date]:
    """Holiday dates from a calendar's TOML text (`dates = [...]`)."""
    return frozenset(date.fromisoformat(str(d)) for d in tomllib.loads(text)["dates"])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


# ------------------------------------------------------------------ the decision


def decide(
    req: ContactRequest,
    history: list[PastContact],
    rules: RuleSet,
    situation: Situation,
    holidays: frozenset[date] = frozenset(),
) -> GuardDecision:
    """The guard's answer for `req` given everything already sent to the person."""
    req, history = _in_utc(req, history)
    refusal = _refusal(req, history, rules, situation)
    if refusal is not None:
        return refusal
    if req.purpose == "transactional":
        return GuardDecision(verdict="allowed", rule=GEN_TRANSACTIONAL, at=req.at)
    at, rule = first_allowed(req.at, req.channel, req.timezone, history, rules, holidays)
    if at == req.at:
        return GuardDecision(verdict="allowed", rule=GEN_ALLOWED, at=req.at)
    return GuardDecision(verdict="deferred", rule=rule, at=at, reason=f"next allowed moment {at.isoformat()}")


def judge(
    req: ContactRequest, history: list[PastContact], rules: RuleSet, situation: Situation, holidays: frozenset[date]
) -> GuardDecision:
    """`decide`, stamped with when it was decided (the contact's business time): what the guard
    activity and the simulator record and answer."""
    return decide(req, history, rules, situation, holidays).model_copy(update={"decided_at": req.at})


def decision_key(req: ContactRequest) -> str:
    """The key of a decision's record: the contact's key and the moment it was asked (one
    decision per ask; a retried ask finds it and gets the same answer)."""
    return f"{req.key}#guard@{req.at.isoformat()}"


def _in_utc(req: ContactRequest, history: list[PastContact]) -> tuple[ContactRequest, list[PastContact]]:
    """All instants in UTC: rolling windows are real hours, and Python's arithmetic on two
    times in the same ZoneInfo is wall-clock arithmetic (an hour off across a DST change)."""
    return _utc(req), [_utc(c) for c in history]


_Timed = TypeVar("_Timed", "ContactRequest", "PastContact")


def _utc(c: _Timed) -> _Timed:
    """`c` with its instant in UTC (itself if it already is: the simulator keeps its contacts so)."""
    return c if c.at.tzinfo is _UTC else c.model_copy(update={"at": c.at.astimezone(_UTC)})


_UTC = ZoneInfo("UTC")


def _refusal(req: ContactRequest, history: list[PastContact], rules: RuleSet, sit: Situation) -> GuardDecision | None:
    def refused(rule: str, reason: str) -> GuardDecision:
        return GuardDecision(verdict="refused", rule=rule, at=req.at, reason=reason)

    if sit.stopped:
        return refused(GEN_STOP, "collection is stopped")
    if req.purpose == "transactional":
        return None
    if sit.held:
        return refused(GEN_HOLD, "hardship breathing space or dispute open")
    if sit.paused and req.purpose == "escalation":
        return refused(GEN_PAUSED, "escalation is paused by an arrangement")
    if req.channel in sit.opted_out:
        return refused(rules.opt_out_id or GEN_OPT_OUT, f"the borrower opted out of {req.channel}")
    for cap in rules.caps:
        if req.channel in cap.channels and cap.max == 0:
            return refused(cap.id, f"no {'/'.join(cap.channels)} contact allowed at all")
        if req.channel in cap.channels and cap.action == "refuse" and _over_cap(req.at, history, cap):
            return refused(
                cap.id, f"more than {cap.max} {cap.count} on {'/'.join(cap.channels)} in {cap.window_hours} h"
            )
    for quiet in rules.quiet:
        if req.channel in quiet.channels and quiet.action == "refuse" and _quiet_until(req.at, history, quiet):
            return refused(quiet.id, f"a conversation took place within {quiet.days} days")
    return None


def first_allowed(
    at: datetime, channel: str, tz: str, history: list[PastContact], rules: RuleSet, holidays: frozenset[date]
) -> tuple[datetime, str]:
    """The first moment at or after `at` that no deferring rule forbids, and the rule that
    pushed it last (empty if `at` itself is allowed)."""
    utc = ZoneInfo("UTC")
    at = at.astimezone(utc)
    history = [c.model_copy(update={"at": c.at.astimezone(utc)}) for c in history]
    rule = ""
    for _ in range(1000):  # each pass moves forward; a few passes settle it
        moved = False
        for step, step_rule in _deferrals(at, channel, tz, history, rules, holidays):
            if step > at:
                at, rule, moved = step, step_rule, True
        if not moved:
            return at, rule
    raise RuntimeError("no allowed moment found")  # pragma: no cover - rules always leave a window


def _deferrals(
    at: datetime, channel: str, tz: str, history: list[PastContact], rules: RuleSet, holidays: frozenset[date]
) -> list[tuple[datetime, str]]:
    out: list[tuple[datetime, str]] = []
    if channel in rules.hours.channels:
        out.append((_in_hours(at, tz, rules.hours, holidays), rules.hours.id))
    out.extend(
        (_cap_frees(at, history, cap), cap.id)
        for cap in rules.caps
        if channel in cap.channels and cap.action == "defer"
    )
    for quiet in rules.quiet:
        if channel in quiet.channels and quiet.action == "defer":
            until = _quiet_until(at, history, quiet)
            out.append((max(at, until) if until else at, quiet.id))
    return out


def _in_hours(at: datetime, tz: str, hours: HoursRule, holidays: frozenset[date]) -> datetime:
    """`at` if the borrower's wall clock reads inside the window on a working day, else the
    first later instant at which it does. Clock changes are taken as they come: a window
    opening inside a skipped hour opens when the clock jumps past it; in a repeated hour the
    wall clock is what counts, and a jump back into the window reopens it."""
    zone = ZoneInfo(tz)
    if _open_at(at, zone, hours, holidays):
        return at
    first_day = at.astimezone(zone).date()
    for offset in range(800):
        day = first_day + timedelta(days=offset)
        if day in holidays:
            continue
        for candidate in sorted(_openings(day, zone, hours)):
            if candidate > at and _open_at(candidate, zone, hours, holidays):
                return candidate
    raise RuntimeError("no contact window within 800 days")  # pragma: no cover - holidays cannot fill years


def _open_at(at: datetime, zone: ZoneInfo, hours: HoursRule, holidays: frozenset[date]) -> bool:
    local = at.astimezone(zone)
    return hours.start <= local.time() < hours.end and local.date() not in holidays


def _openings(day: date, zone: ZoneInfo, hours: HoursRule) -> list[datetime]:
    """Instants on `day` at which the wall clock may enter the window: each real reading of
    `start` (two in a repeated hour, none in a skipped one) and every clock change."""
    utc = ZoneInfo("UTC")
    out = []
    for fold in (0, 1):
        local = datetime.combine(day, hours.start, tzinfo=zone).replace(fold=fold)
        instant = local.astimezone(utc)
        if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
            out.append(instant)
    return out + _clock_changes(day, zone)


def _clock_changes(day: date, zone: ZoneInfo) -> list[datetime]:
    """The instants during `day` (local) at which the zone's UTC offset changes."""
    utc = ZoneInfo("UTC")
    lo = datetime.combine(day, time(0), tzinfo=zone).astimezone(utc) - timedelta(hours=2)
    hi = lo + timedelta(hours=28)
    step = timedelta(minutes=30)
    changes, t = [], lo
    while t < hi:
        if t.astimezone(zone).utcoffset() != (t + step).astimezone(zone).utcoffset():
            a, b = t, t + step  # the offset changes in (a, b]: narrow it to the second
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                a, b = (mid, b) if mid.astimezone(zone).utcoffset() == a.astimezone(zone).utcoffset() else (a, mid)
            if b.astimezone(zone).date() == day:
                changes.append(b)
        t += step
    return changes


def _counted(history: list[PastContact], cap: CapRule) -> list[datetime]:
    return sorted(c.at for c in history if c.channel in cap.channels and (cap.count == "attempts" or c.connected))


DELIVERY_MARGIN = timedelta(minutes=1)
"""A contact is stamped when the guard allows it and delivered a moment later; windows are
this much longer so that delivery times, too, never exceed a cap."""


def _window(cap: CapRule) -> timedelta:
    return timedelta(hours=cap.window_hours) + DELIVERY_MARGIN


def _over_cap(at: datetime, history: list[PastContact], cap: CapRule) -> bool:
    """Contacts stamped after `at` count too: another loan of the person may have taken a
    slot a moment later in its clock but earlier in the database."""
    window = _window(cap)
    return sum(1 for t in _counted(history, cap) if at - window < t) >= cap.max


def _cap_frees(at: datetime, history: list[PastContact], cap: CapRule) -> datetime:
    """When a slot frees up in the rolling window (the oldest counted contact ages out)."""
    window = _window(cap)
    inside = [t for t in _counted(history, cap) if at - window < t]
    if len(inside) < cap.max:
        return at
    return inside[len(inside) - cap.max] + window


def _quiet_until(at: datetime, history: list[PastContact], quiet: QuietRule) -> datetime | None:
    """End of the quiet period after the latest conversation, if `at` falls inside it."""
    talks = [c.at for c in history if c.connected]
    if not talks:
        return None
    until = max(talks) + timedelta(days=quiet.days)
    return until if at < until else None


def history_horizon(rules: RuleSet) -> timedelta:
    """How far back the rules look: the longest rolling window or quiet period (a day at least).
    Contacts older than this cannot change a decision, so neither the guard nor a preview reads them."""
    hours = [c.window_hours for c in rules.caps] + [q.days * 24 for q in rules.quiet] + [24]
    return timedelta(hours=max(hours)) + DELIVERY_MARGIN


class ChannelBudget(BaseModel):
    """How many more contacts the caps allow on a channel now (`left` None: no cap counts it),
    and the cap that leaves the fewest (`rule`)."""

    channel: str
    left: int | None
    rule: str = ""


def budget(at: datetime, history: list[PastContact], rules: RuleSet) -> list[ChannelBudget]:
    """The contact budget left at `at` on each channel: for every cap that counts the channel,
    its `max` less the contacts inside its rolling window, the smallest of them. A pure reading
    of the person's history (the desk shows it; nothing is taken)."""
    utc = ZoneInfo("UTC")
    at = at.astimezone(utc)
    history = [c.model_copy(update={"at": c.at.astimezone(utc)}) for c in history]
    out = []
    for channel in CHANNELS:
        best: tuple[int, str] | None = None
        for cap in rules.caps:
            if channel not in cap.channels:
                continue
            used = sum(1 for t in _counted(history, cap) if at - _window(cap) < t)
            left = max(cap.max - used, 0)
            if best is None or left < best[0]:
                best = (left, cap.id)
        out.append(ChannelBudget(channel=channel, left=None if best is None else best[0], rule=best[1] if best else ""))
    return out
