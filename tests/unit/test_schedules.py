"""A function's schedule: cron and interval parsing, next and last ticks (tables and properties), the ring records."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.dht.ring_math import RING_SIZE
from cortex_rm.events.functions import InvalidFunction
from cortex_rm.events.schedules import (
    MAX_SCHEDULED_BYTES,
    MAX_TIME_MS,
    CronSchedule,
    IntervalSchedule,
    InvalidSchedule,
    MalformedScheduleRecord,
    Schedule,
    TICK_FIRERS,
    TickRecord,
    TooManySchedules,
    check_schedule,
    could_have_fired,
    decode_scheduled,
    encode_scheduled,
)

UTC = datetime.UTC


def ms(*parts: int) -> int:
    return int(datetime.datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def when(t: int) -> str:
    return datetime.datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------ tables against known dates
# (2024-01-01 is a Monday; 2024 is a leap year.)


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("*/15 * * * *", ms(2024, 1, 1, 0, 7, 30), "2024-01-01 00:15:00"),
        ("*/15 * * * *", ms(2024, 1, 1, 0, 15), "2024-01-01 00:30:00"),  # strictly after
        ("* * * * *", ms(2024, 1, 1, 0, 0, 0) + 1, "2024-01-01 00:01:00"),
        ("0 9 * * mon-fri", ms(2024, 1, 5, 9), "2024-01-08 09:00:00"),  # Friday 09:00 -> Monday
        ("0 9 * * 1-5", ms(2024, 1, 5, 8, 59, 59), "2024-01-05 09:00:00"),
        ("0 0 * * 7", ms(2024, 1, 1), "2024-01-07 00:00:00"),  # 7 is Sunday
        ("0 0 * * sun", ms(2024, 1, 1), "2024-01-07 00:00:00"),
        ("0 0 * * 0", ms(2024, 1, 1), "2024-01-07 00:00:00"),
        ("0 0 29 2 *", ms(2024, 3, 1), "2028-02-29 00:00:00"),
        ("0 0 29 feb *", ms(2024, 2, 28, 12), "2024-02-29 00:00:00"),
        ("@yearly", ms(2023, 12, 31, 23, 59, 59) + 999, "2024-01-01 00:00:00"),
        ("59 23 31 dec *", ms(2024, 1, 1), "2024-12-31 23:59:00"),
        ("0 0 */10 * *", ms(2024, 1, 21), "2024-01-31 00:00:00"),  # days 1, 11, 21, 31
        ("0 0 */10 * *", ms(2024, 2, 21), "2024-03-01 00:00:00"),  # February has no 31st
        ("0 0 31 * *", ms(2024, 4, 1), "2024-05-31 00:00:00"),  # April has no 31st
        ("0 0 1,15 * fri", ms(2024, 1, 1), "2024-01-05 00:00:00"),  # both restricted: either day
        ("0 0 1,15 * fri", ms(2024, 1, 12), "2024-01-15 00:00:00"),
        ("0 0 13 * fri", ms(2024, 9, 6), "2024-09-13 00:00:00"),  # Friday the 13th, by both
        ("0 0 */2 * mon", ms(2024, 1, 1), "2024-01-15 00:00:00"),  # dom starts with *: both (odd Mondays)
        ("0 0 * 3 mon", ms(2024, 1, 1), "2024-03-04 00:00:00"),  # dom *: Mondays of March
        ("0 0 29 2 */7", ms(2090, 3, 1), "2128-02-29 00:00:00"),  # the rarest: Feb 29 on a Sunday (2100 is not leap)
        ("30 4 * jan-mar/2 *", ms(2024, 1, 31, 5), "2024-03-01 04:30:00"),  # months 1 and 3
        ("5-10/5,50 2 * * *", ms(2024, 1, 1, 2, 6), "2024-01-01 02:10:00"),
        ("5-10/5,50 2 * * *", ms(2024, 1, 1, 2, 10), "2024-01-01 02:50:00"),
        ("@hourly", ms(2024, 1, 1, 23, 30), "2024-01-02 00:00:00"),
        ("@weekly", ms(2024, 1, 1), "2024-01-07 00:00:00"),
        ("@monthly", ms(2024, 12, 15), "2025-01-01 00:00:00"),
        ("every 90m", ms(2024, 1, 1), "2024-01-01 01:30:00"),
        ("every 7s", 0, "1970-01-01 00:00:07"),
        ("every 1h", ms(2024, 1, 1, 0, 59, 59) + 999, "2024-01-01 01:00:00"),
    ],
)
def test_next_tick_table(text: str, after: int, expected: str) -> None:
    """The first tick strictly after a time, against dates worked out by hand."""
    schedule = Schedule.parse(text)
    tick = schedule.next_tick(after)
    assert when(tick) == expected
    assert schedule.matches(tick)


@pytest.mark.parametrize(
    ("text", "at", "expected"),
    [
        ("*/15 * * * *", ms(2024, 1, 1, 0, 15), "2024-01-01 00:15:00"),  # at or before
        ("*/15 * * * *", ms(2024, 1, 1, 0, 14, 59), "2024-01-01 00:00:00"),
        ("0 9 * * mon-fri", ms(2024, 1, 8, 8), "2024-01-05 09:00:00"),  # Monday 08:00 -> Friday
        ("0 0 29 2 *", ms(2024, 2, 28), "2020-02-29 00:00:00"),
        ("0 0 31 * *", ms(2024, 5, 30), "2024-03-31 00:00:00"),
        ("0 0 1,15 * fri", ms(2024, 1, 4), "2024-01-01 00:00:00"),
        ("every 90m", ms(2024, 1, 1, 2, 59), "2024-01-01 01:30:00"),
    ],
)
def test_last_tick_table(text: str, at: int, expected: str) -> None:
    """The latest tick at or before a time (what a node taking over fires)."""
    last = Schedule.parse(text).last_tick(at)
    assert last is not None and when(last) == expected


def test_last_tick_before_the_first_is_none() -> None:
    """A cron schedule has no tick before its first one since the epoch; an interval's is the epoch itself."""
    assert Schedule.parse("0 0 2 1 *").last_tick(ms(1970, 1, 1, 12)) is None
    assert Schedule.parse("every 1h").last_tick(0) == 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * foo *", "month"),
        ("* * * * 8", "day-of-week"),
        ("* * * * fri-mon", "day-of-week"),  # backwards
        ("*/0 * * * *", "minute"),
        ("*/61 * * * *", "minute"),
        ("5/15 * * * *", "minute"),  # a step needs a range
        ("1,,2 * * * *", "minute"),
        ("mon * * * *", "minute"),  # names only where they mean something
        ("* * * * -1", "day-of-week"),
        ("* * * * ٣", "day-of-week"),  # a Unicode digit is not a cron number
        ("0 0 30 feb *", "day-of-month"),  # never fires
        ("0 0 31 4,6,9,11 *", "day-of-month"),
    ],
)
def test_cron_errors_name_the_field(text: str, field: str) -> None:
    """Every cron error is an InvalidSchedule (an InvalidFunction and a ValueError) naming its field."""
    with pytest.raises(InvalidSchedule, match=f": {field}: ") as raised:
        Schedule.parse(text)
    assert isinstance(raised.value, InvalidFunction) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("* * * *", "five fields"),
        ("* * * * * *", "five fields"),
        ("", "1 to 128"),
        ("   ", "blank"),
        ("x" * 129, "1 to 128"),
        ("@reboot", "unknown macro"),
        ("every 0s", "from 1 s"),
        ("every 367d", "'every <N>s'"),
        ("every 8785h", "from 1 s"),
        ("every -5s", "'every <N>s'"),
        ("every 1.5m", "'every <N>s'"),
    ],
)
def test_other_errors(text: str, words: str) -> None:
    """Shapes that are neither cron nor an interval, and intervals out of bounds, say so."""
    with pytest.raises(InvalidSchedule, match=words):
        Schedule.parse(text)


def test_not_text() -> None:
    """A schedule that is not a string (from JSON) is refused, not crashed on."""
    with pytest.raises(InvalidSchedule):
        Schedule.parse(5)


def test_check_schedule_normalises() -> None:
    """``check_schedule`` gives the registry one spelling: lower case, single spaces, no leading zeros."""
    assert check_schedule("  */5   *  * *\t* ") == "*/5 * * * *"
    assert check_schedule("EVERY 030 S") == "every 30s"
    assert check_schedule("0 9 * JAN-Mar MON-FRI") == "0 9 * jan-mar mon-fri"
    assert check_schedule("@Daily") == "@daily"


def test_names_numbers_and_both_sundays_agree() -> None:
    """Month and day names are their numbers; 0 and 7 are both Sunday."""
    a, b = Schedule.parse("0 0 * jan,dec sun"), Schedule.parse("0 0 * 1,12 7")
    assert isinstance(a, CronSchedule) and isinstance(b, CronSchedule)
    assert (a.months, a.weekdays) == (b.months, b.weekdays) == (frozenset({1, 12}), frozenset({0}))
    assert Schedule.parse("0 0 * * 5-7").ticks_between(ms(2024, 1, 1), ms(2024, 1, 8), 10) == [
        ms(2024, 1, 5), ms(2024, 1, 6), ms(2024, 1, 7)
    ]  # fmt: skip


def test_times_out_of_range_are_refused() -> None:
    """Negative times and times past year 9000 raise ValueError instead of wrapping."""
    for schedule in (Schedule.parse("every 1s"), Schedule.parse("* * * * *")):
        with pytest.raises(ValueError):
            schedule.next_tick(-1)
        with pytest.raises(ValueError):
            schedule.last_tick(MAX_TIME_MS + 1)


# ------------------------------------------------------------ properties

TIMES = st.integers(0, ms(2200, 1, 1))
INTERVALS = st.builds(lambda n, unit: f"every {n}{unit}", st.integers(1, 5000), st.sampled_from("smh"))


@given(INTERVALS, TIMES)
def test_interval_ticks_are_the_multiples_of_the_period(text: str, after: int) -> None:
    """An interval's next tick is the first multiple of its period after the time: none skipped, none early."""
    schedule = Schedule.parse(text)
    assert isinstance(schedule, IntervalSchedule)
    tick = schedule.next_tick(after)
    assert after < tick <= after + schedule.period_ms
    assert tick % schedule.period_ms == 0 and schedule.matches(tick)
    last = schedule.last_tick(after)
    assert last is not None and last <= after < last + schedule.period_ms
    assert schedule.next_tick(last) == last + schedule.period_ms


def _cron_field(low: int, high: int) -> st.SearchStrategy[tuple[str, frozenset[int] | None]]:
    """A field's text and the values it allows (None for ``*``), built independently of the parser."""
    values = st.frozensets(st.integers(low, high), min_size=1, max_size=4)
    listed = values.map(lambda v: (",".join(map(str, sorted(v))), v))
    ranged = st.tuples(st.integers(low, high), st.integers(low, high), st.integers(1, 5)).map(
        lambda t: (f"{min(t[:2])}-{max(t[:2])}/{t[2]}", frozenset(range(min(t[:2]), max(t[:2]) + 1, t[2])))
    )
    return st.one_of(st.just(("*", None)), listed, ranged)


def _reference_next(fields: list[tuple[str, frozenset[int] | None]], after: int) -> int | None:
    """The first matching minute after ``after``, walking minute fields day by day over two years, no skipping."""
    (_, minutes), (_, hours), (day_text, days), (_, months), (dow_text, weekdays) = fields
    either = days is not None and weekdays is not None
    dows = None if weekdays is None else {d % 7 for d in weekdays}
    start = datetime.datetime.fromtimestamp(after // 60_000 * 60 + 60, UTC)
    for offset in range(2 * 366 + 1):
        day = (start + datetime.timedelta(days=offset)).date()
        by_day = days is None or day.day in days
        by_dow = dows is None or day.isoweekday() % 7 in dows
        if (months is not None and day.month not in months) or not ((by_day or by_dow) if either else (by_day and by_dow)):
            continue
        for hour in range(24):
            for minute in range(60):
                moment = datetime.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                if moment >= start and (hours is None or hour in hours) and (minutes is None or minute in minutes):
                    return int(moment.timestamp() * 1000)
    return None


CRON = st.tuples(_cron_field(0, 59), _cron_field(0, 23), _cron_field(1, 31), _cron_field(1, 12), _cron_field(0, 7))


@settings(max_examples=150, deadline=None)
@given(CRON, TIMES)
def test_cron_next_tick_matches_a_plain_minute_walk(fields: tuple, after: int) -> None:  # type: ignore[type-arg]
    """next_tick agrees with a naive walk over every minute of the matching days (when one comes within two years)."""
    text = " ".join(f for f, _ in fields)
    try:
        schedule = Schedule.parse(text)
    except InvalidSchedule as e:
        assert "never fires" in str(e)
        return
    expected = _reference_next(list(fields), after)
    tick = schedule.next_tick(after)
    assert tick > after and schedule.matches(tick)
    if expected is not None:
        assert tick == expected, (text, when(after), when(tick), when(expected))
    else:
        assert tick - after > 2 * 365 * 86_400_000


@settings(max_examples=300, deadline=None)
@given(CRON, TIMES)
def test_cron_next_and_last_tick_agree(fields: tuple, at: int) -> None:  # type: ignore[type-arg]
    """The forward and backward searches agree: nothing matches strictly between last_tick(t) and next_tick(t)."""
    try:
        schedule = Schedule.parse(" ".join(f for f, _ in fields))
    except InvalidSchedule:
        return
    following = schedule.next_tick(at)
    assert following > at and schedule.matches(following)
    last = schedule.last_tick(at)
    if last is not None:
        assert last <= at and schedule.matches(last)
        assert schedule.next_tick(last) == following
    assert schedule.last_tick(following - 1) == last
    assert schedule.last_tick(following) == following


@given(st.one_of(INTERVALS, CRON.map(lambda f: " ".join(t for t, _ in f))), TIMES, st.integers(0, 10**9), st.integers(0, 20))
def test_ticks_between(text: str, after: int, span: int, limit: int) -> None:
    """ticks_between is next_tick repeated: ascending, within (after, until], at most ``limit``."""
    try:
        schedule = Schedule.parse(text)
    except InvalidSchedule:
        return
    ticks = schedule.ticks_between(after, after + span, limit)
    assert len(ticks) <= limit and ticks == sorted(set(ticks))
    assert all(after < t <= after + span and schedule.matches(t) for t in ticks)
    previous = after
    for t in ticks:
        assert schedule.next_tick(previous) == t
        previous = t
    if len(ticks) < limit:
        assert schedule.next_tick(previous) > after + span


@given(st.one_of(INTERVALS, CRON.map(lambda f: " ".join(t for t, _ in f))))
def test_normalised_text_parses_to_the_same_schedule(text: str) -> None:
    """What check_schedule stores parses back to the same schedule."""
    try:
        normal = check_schedule(text.upper().replace(" ", "  "))
    except InvalidSchedule:
        return
    assert Schedule.parse(normal) == Schedule.parse(text)
    assert check_schedule(normal) == normal


# ------------------------------------------------------------ the ring records


def test_scheduled_list_round_trip() -> None:
    """The RM's list of scheduled functions encodes sorted, each name once, and decodes back."""
    data = encode_scheduled(["b", "a", "b"])
    assert json.loads(data) == {"functions": ["a", "b"]}
    assert decode_scheduled(data) == ("a", "b")
    assert decode_scheduled(encode_scheduled([])) == ()


def test_scheduled_list_bounds() -> None:
    """A list that outgrows one ring record is refused when written; a bad name is refused both ways."""
    with pytest.raises(TooManySchedules):
        encode_scheduled(f"{i:064d}" for i in range(MAX_SCHEDULED_BYTES // 64))
    assert len(encode_scheduled(f"{i:064d}" for i in range(900))) <= MAX_SCHEDULED_BYTES
    with pytest.raises(InvalidFunction):
        encode_scheduled(["no spaces"])
    for bad in (b"[]", b'{"functions": "a"}', b'{"functions": ["a"], "x": 1}', b'{"functions": ["../x"]}', b"\xff",
                b'{"functions": [1]}', b"[" * 3000 + b"]" * 3000):  # fmt: skip
        with pytest.raises(MalformedScheduleRecord):
            decode_scheduled(bad)


def test_tick_record_round_trip_and_errors() -> None:
    """A tick record is {"tick": ms, "by": 40 hex}; anything else is MalformedScheduleRecord."""
    record = TickRecord(ms(2024, 1, 1), 0xAB << 150)
    assert TickRecord.decode(record.encode()) == record
    assert json.loads(record.encode())["by"] == f"{0xAB << 150:040x}"
    for bad in ({"tick": 1}, {"tick": True, "by": "a" * 40}, {"tick": -1, "by": "a" * 40}, {"tick": 1, "by": "A" * 40},
                {"tick": 1, "by": "a" * 39}, {"tick": 1.5, "by": "a" * 40}, {"tick": 1, "by": "a" * 40, "x": 0}):  # fmt: skip
        with pytest.raises(MalformedScheduleRecord):
            TickRecord.decode(json.dumps(bad).encode())
    with pytest.raises(MalformedScheduleRecord):
        TickRecord.decode(b"x" * 300)


# ------------------------------------------------------------ who may have fired a tick

TOP = RING_SIZE - 1  # the last point on the ring: arcs from near it wrap around zero


@pytest.mark.parametrize(
    ("point", "writer", "live", "gone", "believed"),
    [
        (100, 110, {110, 120, 130, 140}, set(), True),  # the owner
        (100, 130, {110, 120, 130, 140}, set(), True),  # the third live member at or after the key
        (100, 140, {110, 120, 130, 140}, set(), False),  # the fourth: too far
        (100, 100, {100, 120, 130, 140}, set(), True),  # a member exactly at the key owns it
        (100, 105, {110, 120, 130, 140}, {105}, True),  # a dead former owner, before the owner
        (100, 125, {110, 120, 130, 140}, {125}, True),  # a dead member between the successors
        (100, 135, {110, 120, 130, 140}, {135}, False),  # a dead member beyond the third
        (100, 105, {110, 120, 130, 140}, set(), False),  # unknown on the arc: anyone can make such an id
        (100, 90, {90, 110, 120, 130}, set(), False),  # the member just before the key
        (TOP - 5, 3, {TOP - 2, 3, 9, 50}, set(), True),  # the arc wraps around zero
        (TOP - 5, 50, {TOP - 2, 3, 9, 50}, set(), False),
        (TOP - 5, TOP - 9, {TOP - 9, TOP - 2, 3, 9}, set(), False),  # before the key: the far end of the ring
        (100, 90, {110, 90}, set(), True),  # two members: both may own the key in some view
        (100, 110, set(), set(), False),  # no view of anyone
    ],
)
def test_could_have_fired_table(point: int, writer: int, live: set[int], gone: set[int], believed: bool) -> None:
    """The writers believed are the first TICK_FIRERS live members at or after the key, and the gone ones among them."""
    assert TICK_FIRERS == 3
    assert could_have_fired(point, writer, live, gone) is believed


@settings(max_examples=200)
@given(
    st.integers(0, RING_SIZE - 1),
    st.sets(st.integers(0, RING_SIZE - 1), min_size=1, max_size=12),
    st.integers(1, 5),
)
def test_the_live_writers_believed_are_the_first_count_after_the_key(point: int, live: set[int], count: int) -> None:
    """Among live members, exactly the ``count`` nearest at or after the key (clockwise) are believed."""
    walk = sorted(live, key=lambda member: (member - point) % RING_SIZE)
    believed = [member for member in walk if could_have_fired(point, member, live, set(), count)]
    assert believed == walk[:count]
