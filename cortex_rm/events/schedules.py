"""A function's schedule: when it fires, as pure arithmetic on milliseconds since the Unix epoch (UTC).

Two forms (``Schedule.parse``; ``check_schedule`` is what the registry calls):

* **An interval**, ``every <N>s|m|h`` (``every 30s``, ``every 5 m``): ticks at the
  multiples of the period since the epoch, so every node computes the same ticks
  whatever its start time.  N seconds is at least 1 s and at most ``MAX_INTERVAL_S``.
* **Cron**, five fields ``minute hour day-of-month month day-of-week`` in UTC, each a
  comma list of ``*``, ``*/n``, ``a``, ``a-b`` or ``a-b/n``; months by number or name
  (``jan``..``dec``), days of the week by number (0 and 7 are Sunday) or name
  (``sun``..``sat``); also ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``,
  ``@monthly``, ``@yearly`` (``@annually``).  A tick is a minute whose fields all
  match, with cron's day rule: when *both* day fields are restricted (neither
  starts with ``*``, as Vixie cron decides it) a day matches if *either* does
  (``0 0 1,15 * fri``: the 1st, the 15th, and every Friday); otherwise both must.
  An expression that can never fire (``0 0 30 feb *``) is refused.

Every error is an ``InvalidSchedule`` (an ``InvalidFunction``, so a ``ValueError``)
naming the field.  ``next_tick(after_ms)`` is the first tick strictly after a time,
``last_tick(at_ms)`` the latest at or before one (what a node taking over fires).

Also here, the two ring records of the schedules (``roles/event_schedules.py`` reads
them): the RM's list of functions with a schedule under ``SCHEDULES_KEY``
(``{"functions": [names]}``, ``encode_scheduled``/``decode_scheduled``), and the
last fired tick of one function under ``tick_key(name)`` (``TickRecord``), and who
may have written that (``could_have_fired``).
"""

from __future__ import annotations

import bisect
import datetime
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from cortex_rm.dht.record_store import MAX_VALUE_BYTES
from cortex_rm.dht.ring_math import distance, format_id
from cortex_rm.events.functions import MAX_SCHEDULE_CHARS, InvalidFunction, check_name

MINUTE_MS = 60_000
DAY_MINUTES = 24 * 60
MAX_INTERVAL_S = 366 * 24 * 3600
#: Times this arithmetic accepts: the epoch to 9000-01-01 (far from ``datetime``'s year 9999).
MAX_TIME_MS = int(datetime.datetime(9000, 1, 1, tzinfo=datetime.UTC).timestamp() * 1000)
#: Days a cron search walks at most.  The rarest tick cron can express (the 29th of February on
#: one weekday) recurs within 40 years; a month that cannot match costs one step, not thirty.
MAX_SEARCH_STEPS = 366 * 60

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_INTERVAL = re.compile(r"every\s+([0-9]{1,9})\s*([smh])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
_NUMBER = re.compile(r"[0-9]{1,2}")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the most each month can have


class InvalidSchedule(InvalidFunction):
    """A schedule that does not parse, or cannot fire; the message names the field."""


class MalformedScheduleRecord(InvalidFunction):
    """A schedules list or tick record read from the ring does not have the expected shape."""


def check_schedule(text: object) -> str:
    """``text`` checked and normalised (lower case, single spaces): what the registry stores."""
    return Schedule.parse(text).text


class Schedule(ABC):
    """When a function fires (module doc); immutable, pure."""

    text: str

    @staticmethod
    def parse(text: object) -> Schedule:
        """An ``IntervalSchedule`` or ``CronSchedule``; InvalidSchedule naming what is wrong."""
        if not isinstance(text, str):
            raise InvalidSchedule("schedule must be text: a cron expression or 'every <N>s|m|h'")
        if not 0 < len(text) <= MAX_SCHEDULE_CHARS:
            raise InvalidSchedule(f"schedule must be 1 to {MAX_SCHEDULE_CHARS} characters (got {len(text)})")
        words = text.lower().split()
        if not words:
            raise InvalidSchedule("schedule is blank")
        if words[0] == "every":
            return IntervalSchedule.from_text(" ".join(words))
        return CronSchedule.from_text(" ".join(words))

    @abstractmethod
    def next_tick(self, after_ms: int) -> int:
        """The first tick strictly after ``after_ms``."""

    @abstractmethod
    def last_tick(self, at_ms: int) -> int | None:
        """The latest tick at or before ``at_ms`` (None: none since the epoch)."""

    @abstractmethod
    def matches(self, ms: int) -> bool:
        """Whether ``ms`` is a tick."""

    def ticks_between(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """The ticks ``t`` with ``after_ms < t <= until_ms``, the first ``limit`` of them."""
        ticks: list[int] = []
        tick = after_ms
        while len(ticks) < limit:
            tick = self.next_tick(tick)
            if tick > until_ms:
                break
            ticks.append(tick)
        return ticks


def _check_time(ms: int) -> None:
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"a schedule's time must be from 0 to {MAX_TIME_MS} ms since the epoch (got {ms})")


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """``every <N>s|m|h``: the multiples of ``period_ms`` since the epoch."""

    text: str
    period_ms: int

    @classmethod
    def from_text(cls, text: str) -> IntervalSchedule:
        """``text`` (lower case, single spaces: as ``Schedule.parse`` passes it) as an interval."""
        match = _INTERVAL.fullmatch(text)
        if match is None:
            raise InvalidSchedule(f"schedule {text[:80]!r}: an interval is 'every <N>s', 'every <N>m' or 'every <N>h'")
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
        if not 1 <= seconds <= MAX_INTERVAL_S:
            raise InvalidSchedule(f"schedule {text!r}: the interval must be from 1 s to {MAX_INTERVAL_S // 3600} h")
        return cls(f"every {match.group(1).lstrip('0')}{match.group(2)}", seconds * 1000)

    def next_tick(self, after_ms: int) -> int:
        _check_time(after_ms)
        return (after_ms // self.period_ms + 1) * self.period_ms

    def last_tick(self, at_ms: int) -> int | None:
        _check_time(at_ms)
        return at_ms // self.period_ms * self.period_ms

    def matches(self, ms: int) -> bool:
        return ms >= 0 and ms % self.period_ms == 0


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """Five cron fields, each as the set of values it allows (days of the week 0-6, Sunday 0)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: Cron's rule: both day fields restricted, so a day matching either one is a tick's day.
    either_day: bool = False

    @classmethod
    def from_text(cls, text: str) -> CronSchedule:
        """``text`` (lower case, single spaces: as ``Schedule.parse`` passes it) as cron fields or a macro."""
        expanded = _MACROS.get(text, text)
        if expanded.startswith("@"):
            raise InvalidSchedule(f"schedule {text[:80]!r}: unknown macro (known: {', '.join(sorted(_MACROS))})")
        fields = expanded.split(" ")
        if len(fields) != 5:
            raise InvalidSchedule(
                f"schedule {text[:80]!r}: cron needs five fields (minute hour day-of-month month day-of-week), "
                f"got {len(fields)}; or write 'every <N>s|m|h'"
            )
        minute, hour, day, month, weekday = fields
        parsed = cls(
            text=text,
            minutes=_field(text, "minute", minute, 0, 59),
            hours=_field(text, "hour", hour, 0, 23),
            days=_field(text, "day-of-month", day, 1, 31),
            months=_field(text, "month", month, 1, 12, _MONTHS, 1),
            weekdays=frozenset(d % 7 for d in _field(text, "day-of-week", weekday, 0, 7, _DAYS, 0)),
            either_day=not day.startswith("*") and not weekday.startswith("*"),
        )
        if not parsed.either_day and not any(d <= _DAYS_IN_MONTH[m - 1] for m in parsed.months for d in parsed.days):
            raise InvalidSchedule(
                f"schedule {text!r}: day-of-month: no month of the schedule has such a day; it never fires"
            )
        return parsed

    @cached_property
    def _day_minutes(self) -> tuple[int, ...]:
        """The minutes of a matching day that are ticks, ascending."""
        return tuple(sorted(h * 60 + m for h in self.hours for m in self.minutes))

    def _day_matches(self, date: datetime.date) -> bool:
        by_day, by_weekday = date.day in self.days, date.isoweekday() % 7 in self.weekdays
        return (by_day or by_weekday) if self.either_day else (by_day and by_weekday)

    def matches(self, ms: int) -> bool:
        if ms < 0 or ms % MINUTE_MS:
            return False
        minute = ms // MINUTE_MS
        date = datetime.date.fromordinal(_EPOCH_ORDINAL + minute // DAY_MINUTES)
        minute_of_day = minute % DAY_MINUTES
        return (
            date.month in self.months and self._day_matches(date)
            and minute_of_day // 60 in self.hours and minute_of_day % 60 in self.minutes
        )  # fmt: skip

    def next_tick(self, after_ms: int) -> int:
        # Walk forward day by day from the minute after ``after_ms``; a month the schedule
        # does not allow is skipped whole.  On a matching day the tick is the first allowed
        # minute not before the start (the start of the first day, of each later one).
        _check_time(after_ms)
        start = after_ms // MINUTE_MS + 1
        day, first_minute = divmod(start, DAY_MINUTES)
        for _ in range(MAX_SEARCH_STEPS):
            date = datetime.date.fromordinal(_EPOCH_ORDINAL + day)
            if date.month not in self.months:
                following = (date.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)
                day, first_minute = following.toordinal() - _EPOCH_ORDINAL, 0
                continue
            if self._day_matches(date):
                i = bisect.bisect_left(self._day_minutes, first_minute)
                if i < len(self._day_minutes):
                    return (day * DAY_MINUTES + self._day_minutes[i]) * MINUTE_MS
            day, first_minute = day + 1, 0
        raise ValueError(f"schedule {self.text!r} has no tick within {MAX_SEARCH_STEPS} days after {after_ms}")

    def last_tick(self, at_ms: int) -> int | None:
        # The same walk backwards from the minute of ``at_ms``: the last allowed minute
        # not after it on that day, else the last one of an earlier matching day.
        _check_time(at_ms)
        day, last_minute = divmod(at_ms // MINUTE_MS, DAY_MINUTES)
        for _ in range(MAX_SEARCH_STEPS):
            if day < 0:
                return None
            date = datetime.date.fromordinal(_EPOCH_ORDINAL + day)
            if date.month not in self.months:
                day, last_minute = date.replace(day=1).toordinal() - _EPOCH_ORDINAL - 1, DAY_MINUTES - 1
                continue
            if self._day_matches(date):
                i = bisect.bisect_right(self._day_minutes, last_minute)
                if i > 0:
                    return (day * DAY_MINUTES + self._day_minutes[i - 1]) * MINUTE_MS
            day, last_minute = day - 1, DAY_MINUTES - 1
        return None


def _field(
    text: str, name: str, spec: str, low: int, high: int, names: tuple[str, ...] = (), first: int = 0
) -> frozenset[int]:
    """One cron field's allowed values (``names[i]`` stands for ``first + i``)."""

    def fail(problem: str) -> InvalidSchedule:
        return InvalidSchedule(f"schedule {text!r}: {name}: {problem}")

    def value(token: str) -> int:
        if _NUMBER.fullmatch(token):
            number = int(token)
        elif token in names:
            number = names.index(token) + first
        else:
            named = f" or a name ({names[0]}..{names[-1]})" if names else ""
            raise fail(f"{token[:20]!r} is not a number from {low} to {high}{named}")
        if not low <= number <= high:
            raise fail(f"{number} is outside {low}-{high}")
        return number

    allowed: set[int] = set()
    for item in spec.split(","):
        if not item:
            raise fail("an empty item in a list (write a,b,c)")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or not 1 <= int(step_text) <= high - low + 1:
                raise fail(f"the step in {item[:20]!r} must be a number from 1 to {high - low + 1}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            left, _, right = base.partition("-")
            start, end = value(left), value(right)
            if start > end:
                raise fail(f"the range {base[:20]!r} runs backwards (write the lower value first)")
        elif slash:
            raise fail(f"a step needs a range: write {base[:10]}-{high}/{step_text} or */{step_text}")
        else:
            start = end = value(base)
        allowed.update(range(start, end + 1, step))
    return frozenset(allowed)


def tick_payload(schedule: str, tick_ms: int) -> bytes:
    """The event a scheduled tick fires with, ``{"tick": ms, "schedule": text}``: the only one an executor
    runs a tick on (a tick carries no caller, so its event is not the sender's to choose)."""
    return json.dumps({"tick": tick_ms, "schedule": schedule}).encode()


# ------------------------------------------------------------ the schedules' ring records

#: The most bytes of the RM's schedules list: one ring record (about 950 names of 64 characters).
MAX_SCHEDULED_BYTES = MAX_VALUE_BYTES


class TooManySchedules(ValueError):
    """The functions with a schedule no longer fit in one ring record."""


def encode_scheduled(names: Iterable[str]) -> bytes:
    """The RM's list of functions with a schedule, for ``SCHEDULES_KEY`` (sorted, each once)."""
    listed = sorted({check_name(name) for name in names})
    data = json.dumps({"functions": listed}, separators=(",", ":")).encode()
    if len(data) > MAX_SCHEDULED_BYTES:
        raise TooManySchedules(
            f"{len(listed)} scheduled functions take {len(data)} bytes; the ring record holds {MAX_SCHEDULED_BYTES}"
        )
    return data


def decode_scheduled(data: bytes) -> tuple[str, ...]:
    """The names ``encode_scheduled`` wrote; MalformedScheduleRecord for anything else."""
    document = _json_object(data, MAX_SCHEDULED_BYTES, "schedules list")
    names = document.get("functions")
    if set(document) != {"functions"} or not isinstance(names, list):
        raise MalformedScheduleRecord('a schedules list must be {"functions": [names]}')
    try:
        return tuple(sorted({check_name(name) for name in names}))
    except InvalidFunction as e:
        raise MalformedScheduleRecord(f"a schedules list with a bad name: {e}") from None


MAX_TICK_BYTES = 256


@dataclass(frozen=True)
class TickRecord:
    """The last tick a function's schedule fired (``tick_key(name)``) and the ring id that claimed it."""

    tick_ms: int
    by: int

    def encode(self) -> bytes:
        return json.dumps({"tick": self.tick_ms, "by": format_id(self.by)}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> TickRecord:
        """``encode``'s bytes back; MalformedScheduleRecord for anything else."""
        document = _json_object(data, MAX_TICK_BYTES, "tick record")
        tick, by = document.get("tick"), document.get("by")
        if set(document) != {"tick", "by"} or not isinstance(tick, int) or isinstance(tick, bool):
            raise MalformedScheduleRecord('a tick record must be {"tick": ms, "by": ring id}')
        if not 0 <= tick <= MAX_TIME_MS:
            raise MalformedScheduleRecord(f"a tick record's tick must be from 0 to {MAX_TIME_MS}")
        if not isinstance(by, str) or len(by) != 40 or any(c not in "0123456789abcdef" for c in by):
            raise MalformedScheduleRecord("a tick record's by must be a ring id (40 lower-case hex digits)")
        return cls(tick, int(by, 16))


#: The live members from a function's key on whose tick records are believed: its owner and the next two.
TICK_FIRERS = 3


def could_have_fired(
    point: int, writer: int, live: Collection[int], gone: Collection[int], count: int = TICK_FIRERS
) -> bool:
    """Whether ``writer`` may have fired the ticks of the function whose key is at ``point``, in one node's view.

    Yes for the first ``count`` ``live`` members at or after the point (the owner, and the
    successors that own the key in views not yet told of a member that joined before
    them), and for a ``gone`` (dead or left) member between the point and the last of
    those (a former owner).  No for anyone else: a member further on, or one unknown
    (a ring id is only a key's hash: anyone can make one fall on the arc).
    """
    reach = sorted(distance(point, member) for member in live)[:count]
    return bool(reach) and (writer in live or writer in gone) and distance(point, writer) <= reach[-1]


def _json_object(data: bytes, limit: int, what: str) -> Mapping[str, object]:
    if len(data) > limit:
        raise MalformedScheduleRecord(f"a {what} of {len(data)} bytes (at most {limit})")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MalformedScheduleRecord(f"a {what} that is not JSON: {str(e)[:80]}") from None
    if not isinstance(document, dict):
        raise MalformedScheduleRecord(f"a {what} must be a JSON object")
    return document
