"""Fuzzing the schedules: the parser over random text, the two ring records over random bytes, and the
firing role over records any member (or a broken RM) could have written.

* ``Schedule.parse`` (a registration's field, from a REST body): ``InvalidSchedule``, or a
  schedule whose ticks are ticks and whose normal form parses back to it.
* ``decode_scheduled`` / ``TickRecord.decode``: ``MalformedScheduleRecord``, or a value that
  encodes back to equal bytes' meaning.
* ``EventSchedules`` reading such records (schedules list, registration, tick record) at a
  refresh and a tick: never a logged failure, and nothing fired but a registered function's
  due tick.
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.functions import SCHEDULES_KEY, FunctionSpec, function_key, tick_key
from cortex_rm.events.schedules import (
    InvalidSchedule,
    MalformedScheduleRecord,
    Schedule,
    TickRecord,
    check_schedule,
    decode_scheduled,
    encode_scheduled,
)
from cortex_rm.roles.event_schedules import EventSchedules
from tests.fuzz.fuzzing import failures_logged, fuzz_settings, mutated
from tests.fuzz.messages import texts

CRON_TOKENS = st.sampled_from(["*", "*/", "-", ",", "/", "0", "7", "59", "31", "12", "60", "99", "jan", "sun", "fri",
                               "mon-fri", " ", "every", "s", "m", "h", "@daily", "\u0663", "\x00", "1"])  # fmt: skip
SCHEDULE_TEXT = st.one_of(texts(140), st.lists(CRON_TOKENS, max_size=14).map("".join))


@fuzz_settings(400)
@given(text=SCHEDULE_TEXT, after=st.integers(0, 10**13))
@example(text="0 0 29 2 */7", after=3_800_000_000_000).via("the rarest tick cron can express")
@example(text="every 999999999h", after=0).via("an interval past the bound")
def test_schedules_parse_or_are_invalid(text: str, after: int) -> None:
    """Any text: InvalidSchedule, or a schedule whose next tick is a tick and whose normal form is the same."""
    try:
        schedule = Schedule.parse(text)
    except InvalidSchedule:
        return
    tick = schedule.next_tick(after)
    assert tick > after and schedule.matches(tick)
    assert Schedule.parse(check_schedule(text)) == schedule


SCHEDULED = encode_scheduled(["alpha", "beta.1"])
TICK = TickRecord(1_700_000_010_000, 0xA << 155).encode()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | texts(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(8), inner, max_size=3),
    max_leaves=8,
)


def payloads(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON, the valid record with a field's value replaced, mutated bytes, deep nesting."""
    keys = sorted(json.loads(valid))
    return st.one_of(
        st.binary(max_size=80),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda k, v: json.dumps({**json.loads(valid), k: v}).encode(), st.sampled_from(keys), JSON),
        mutated(st.just(valid)),
        st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    )


@fuzz_settings(300)
@given(data=payloads(SCHEDULED))
def test_scheduled_lists_decode_or_are_malformed(data: bytes) -> None:
    """Any schedules-list bytes: MalformedScheduleRecord, or names that encode back to the same list."""
    try:
        names = decode_scheduled(data)
    except MalformedScheduleRecord:
        return
    assert decode_scheduled(encode_scheduled(names)) == names


@fuzz_settings(300)
@given(data=payloads(TICK))
def test_tick_records_decode_or_are_malformed(data: bytes) -> None:
    """Any tick-record bytes: MalformedScheduleRecord, or a record that round-trips."""
    try:
        record = TickRecord.decode(data)
    except MalformedScheduleRecord:
        return
    assert TickRecord.decode(record.encode()) == record


RM, ME = 0x1 << 155, 0xA << 155
NOW_S = 1_700_000_003.0
SPEC = FunctionSpec(name="alpha", owner="alice", version=1, code_path="/user/alice/a.py", code_length=1,
                    code_mtime_ms=1, schedule="every 10s", registered_ms=0)  # fmt: skip


@fuzz_settings(200)
@given(
    scheduled=st.one_of(st.just(SCHEDULED), payloads(SCHEDULED)),
    registration=st.one_of(st.just(SPEC.encode()), payloads(SPEC.encode())),
    tick=st.one_of(st.none(), payloads(TICK)),
    writers=st.tuples(st.sampled_from([RM, ME, 7]), st.sampled_from([RM, ME, 7]), st.sampled_from([ME, 7])),
)
def test_the_role_survives_any_records(scheduled: bytes, registration: bytes, tick: bytes | None,
                                       writers: tuple[int, int, int]) -> None:  # fmt: skip
    """A refresh and two ticks over any records: no logged failure; a fire only for alpha's due ticks."""
    records = {SCHEDULES_KEY: Record(SCHEDULES_KEY, scheduled, 1, writers[0]),
               function_key("alpha"): Record(function_key("alpha"), registration, 1, writers[1])}  # fmt: skip
    if tick is not None:
        records[tick_key("alpha")] = Record(tick_key("alpha"), tick, 1, writers[2])
    clock = Clock()
    clock.advance(NOW_S)
    fired: list[tuple[str, int]] = []

    def put(key: str, value: bytes) -> defer.Deferred[Record]:
        records[key] = Record(key, value, 2, ME)
        return defer.succeed(records[key])

    def fire(spec: FunctionSpec, tick_ms: int) -> defer.Deferred[object]:
        fired.append((spec.name, tick_ms))
        return defer.succeed(None)

    node = EventSchedules(clock, me=ME, resource_managers=frozenset({RM}), get=lambda key: defer.succeed(records.get(key)),
                          put=put, owns=lambda key: True, fire=fire, wall_clock_ms=lambda: int(clock.seconds() * 1000))  # fmt: skip
    with failures_logged() as failures:
        node.start()
        clock.advance(20)
        node.stop()
    assert failures == []
    assert all(name == "alpha" and tick % 10_000 == 0 and tick <= (NOW_S + 20) * 1000 for name, tick in fired)
    assert len(fired) == len(set(fired)) <= 3
