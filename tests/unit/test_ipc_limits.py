"""The IPC port's bounds as plain objects: limits, connection slots, the buffer budget, deadlines, refusal logs.

And the connection core charging what it keeps to the budget: a frame costs only the
bytes that have arrived, and one the budget cannot hold is refused FATAL.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, formatEvent

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_deadlines import Deadline, connection_deadline
from cortex_rm.yarn_api.ipc_events import CloseConnection, SendBytes
from cortex_rm.yarn_api.ipc_limits import (
    BUFFER_BUDGET_EXHAUSTED,
    FRAME_TIMEOUT,
    HEADER_TIMEOUT,
    IDLE,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_FROM_ADDRESS,
    BufferAccount,
    BufferBudget,
    ConnectionSlots,
    IpcLimits,
    MiB,
)
from cortex_rm.yarn_api.ipc_refusals import PROTOCOL_ERRORS_SUPPRESSED, RefusalLog, sanitised
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.rpc_protocol import RpcProtocol
from cortex_rm.yarn_api.sasl import SaslServer
from tests.support.ipc_frames import (
    FATAL,
    TEST_PROTOCOL,
    TEST_SERVICE,
    call_frame,
    context_frame,
    parse_responses,
    preamble,
)

HANDSHAKE = preamble() + context_frame(TEST_PROTOCOL)
PROTOCOL = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": lambda call, request: request})


# --- IpcLimits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("max_connections", 0), ("max_buffered_bytes", 0), ("header_timeout_s", 0.0), ("idle_timeout_s", -1.0)],
)
def test_limits_refuse_nonsense(field: str, value: float) -> None:
    """Zero or negative bounds are errors when the limits are made."""
    with pytest.raises(ValueError, match=field):
        IpcLimits(**{field: value})  # type: ignore[arg-type]


def test_per_address_cap_cannot_exceed_the_total() -> None:
    """A per-address cap above the port's cap is a configuration mistake."""
    with pytest.raises(ValueError, match="per_address"):
        IpcLimits(max_connections=10, max_connections_per_address=11)


def test_fitting_grows_the_budget_only_when_one_frame_would_not_fit() -> None:
    """The default budget holds a 64 MiB frame as is; a 100 MiB frame limit grows it to 100 MiB + 4 + 8 MiB."""
    limits = IpcLimits()
    assert limits.fitting(64 * MiB) is limits
    assert limits.fitting(100 * MiB).max_buffered_bytes == 100 * MiB + 4 + 8 * MiB


# --- ConnectionSlots -----------------------------------------------------------------------


def test_slots_cap_the_total_and_each_address() -> None:
    """Per-address cap first reached by one host, the total cap by all; releasing frees a slot."""
    slots = ConnectionSlots(max_total=3, max_per_address=2)
    assert [slots.admit("10.0.0.1") for _ in range(3)] == [None, None, TOO_MANY_FROM_ADDRESS]
    assert slots.admit("10.0.0.2") is None
    assert slots.admit("10.0.0.3") == TOO_MANY_CONNECTIONS
    slots.release("10.0.0.1")
    assert (slots.total, slots.from_address("10.0.0.1")) == (2, 1)
    assert slots.admit("10.0.0.3") is None


# --- BufferBudget ------------------------------------------------------------------------------


def test_budget_fits_without_evicting_while_there_is_room() -> None:
    """Claims within the limit evict nobody; the total is what the accounts hold; past it, a claim fails."""
    evicted: list[str] = []
    budget = BufferBudget(100)
    a, b = budget.account(lambda: evicted.append("a")), budget.account(lambda: evicted.append("b"))
    held(a, 60, 80)
    held(b, 40, 80)
    assert budget.total == 100 and evicted == []
    assert not b.claim(41, 80)  # a receives an 80-byte frame too: it does not give way
    assert evicted == [] and budget.total == 100


def held(account: BufferAccount, amount: int, frame_size: int) -> BufferAccount:
    """Claim and hold ``amount`` bytes of a ``frame_size``-byte frame (the claim must succeed)."""
    assert account.claim(amount, frame_size)
    account.hold(amount)
    return account


def test_budget_evicts_holders_of_larger_frames_largest_first_for_a_smaller_frame() -> None:
    """A small frame needing room evicts the holders of larger frames, largest frame first, only as many as needed."""
    evicted: list[str] = []
    budget = BufferBudget(100)
    for name, amount, frame_size in (("big", 30, 60), ("biggest", 20, 90), ("small", 15, 15), ("bigger", 30, 80)):
        held(budget.account(lambda name=name: evicted.append(name)), amount, frame_size)
    honest = budget.account(lambda: evicted.append("honest"))
    assert honest.claim(40, 40)
    assert evicted == ["biggest", "bigger"]  # 20 + 30 freed: 45 held + 40 fits
    assert budget.total == 45


def test_budget_refuses_a_frame_rather_than_evicting_same_or_smaller_ones() -> None:
    """A claim that could only fit by evicting holders of frames no larger than its own fails and evicts nobody."""
    evicted: list[int] = []
    budget = BufferBudget(100)
    for i in range(4):
        held(budget.account(lambda i=i: evicted.append(i)), 24, 64)
    hostile = budget.account(lambda: None)
    assert not hostile.claim(10, 64)  # the others receive 64-byte frames too: none gives way
    assert evicted == [] and budget.total == 96


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 60), st.integers(1, 80)), max_size=60))
def test_budget_never_exceeds_its_limit_through_claims(steps: list[tuple[int, int, int]]) -> None:
    """Whatever the claims, holding only what was granted keeps the total within the limit."""
    budget = BufferBudget(100)
    accounts: list[BufferAccount] = []
    for _ in range(6):
        accounts.append(budget.account(lambda: None))
    for index, amount, frame_size in steps:
        account = accounts[index]
        if account.claim(amount, max(frame_size, amount)):
            account.hold(amount)
        assert budget.total <= budget.limit
        assert budget.total == sum(a.held for a in accounts)


# --- connection deadlines ----------------------------------------------------------------------

LIMITS = IpcLimits(header_timeout_s=10, frame_timeout_s=5, idle_timeout_s=20)


@pytest.mark.parametrize(
    "ready, last_input, frame_started, outstanding, expected",
    [
        (False, 0.0, None, 0, Deadline(10.0, HEADER_TIMEOUT)),  # header first
        (False, 0.0, 2.0, 0, Deadline(7.0, FRAME_TIMEOUT)),  # a stalled frame before the header deadline
        (True, 30.0, None, 0, Deadline(50.0, IDLE)),
        (True, 30.0, 40.0, 0, Deadline(45.0, FRAME_TIMEOUT)),
        (True, 30.0, None, 2, None),  # calls running: nothing expires
        (True, 30.0, 40.0, 2, Deadline(45.0, FRAME_TIMEOUT)),  # ... but a stalled frame still does
    ],
)
def test_connection_deadline_table(
    ready: bool, last_input: float, frame_started: float | None, outstanding: int, expected: Deadline | None
) -> None:
    """The earliest of header, frame and idle deadlines that apply, with its reason."""
    deadline = connection_deadline(
        LIMITS,
        opened_at=0.0,
        ready=ready,
        last_input_at=last_input,
        frame_started_at=frame_started,
        outstanding=outstanding,
    )
    assert deadline == expected


# --- the core charging the budget ----------------------------------------------------------------


def connection(budget: BufferBudget, max_data_length: int = 1 << 20) -> IpcConnection:
    """A simple-only connection of the test protocol, charging ``budget``."""
    return IpcConnection(
        {PROTOCOL.name: PROTOCOL},
        SaslServer.simple_only(),
        peer="10.0.0.7:4711",
        max_data_length=max_data_length,
        account=budget.account(lambda: None),
    )


def test_a_declared_frame_costs_only_the_bytes_that_arrived() -> None:
    """Declaring 100 KiB and sending 3 KiB holds about 3 KiB of the budget, not 100 KiB."""
    budget = BufferBudget(200 * 1024)
    core = connection(budget)
    core.receive(HANDSHAKE + (100 * 1024).to_bytes(4, "big") + b"\x00" * 1000)
    for _ in range(2):
        core.receive(b"\x00" * 1000)
    assert core.pending_bytes == budget.total == 4 + 3000


def test_a_frame_larger_than_the_remaining_budget_is_refused_when_declared() -> None:
    """With 2 x 30 KiB held elsewhere of a 100 KiB budget, declaring a 50 KiB frame is FATAL RetriableException."""
    budget = BufferBudget(100 * 1024)
    for _ in range(2):
        budget.account(lambda: None).hold(30 * 1024)
    core = connection(budget)
    events = core.receive(HANDSHAKE + (50 * 1024).to_bytes(4, "big") + b"\x00" * 10)
    [fatal] = parse_responses(b"".join(e.data for e in events if isinstance(e, SendBytes)))
    assert fatal.status == FATAL and fatal.exception_class == errors.RETRIABLE_EXCEPTION
    assert "Server too busy" in fatal.header.errorMsg
    assert isinstance(events[-1], CloseConnection) and events[-1].refusal == BUFFER_BUDGET_EXHAUSTED
    assert budget.total == 60 * 1024  # the refused connection holds nothing


def test_arriving_bytes_past_the_budget_refuse_the_connection() -> None:
    """Two connections each declare 60 KiB of a 100 KiB budget: the one whose bytes overflow it is refused."""
    budget = BufferBudget(100 * 1024)
    first, second = connection(budget), connection(budget)
    for core in (first, second):
        events = core.receive(HANDSHAKE + (60 * 1024).to_bytes(4, "big"))
        assert not any(isinstance(e, CloseConnection) for e in events)
    first.receive(b"\x00" * 50 * 1024)
    events = second.receive(b"\x00" * 51 * 1024)
    assert isinstance(events[-1], CloseConnection) and events[-1].refusal == BUFFER_BUDGET_EXHAUSTED
    assert budget.total == first.pending_bytes == 4 + 50 * 1024


def test_whole_frames_in_one_read_are_never_charged() -> None:
    """A read carrying complete calls is served even with the budget full, and holds nothing."""
    budget = BufferBudget(1000)
    budget.account(lambda: None).hold(1000)
    core = connection(budget)
    request = UserInformationProto(effectiveUser="x" * 500)
    events = core.receive(HANDSHAKE + call_frame(1, "echoUser", TEST_PROTOCOL, request))
    assert not any(isinstance(e, CloseConnection) for e in events)
    assert core.outstanding == 1 and core.pending_bytes == 0


def test_closing_releases_what_the_connection_held() -> None:
    """A lost connection gives its partial frame's bytes back to the budget."""
    budget = BufferBudget(100 * 1024)
    core = connection(budget)
    core.receive(HANDSHAKE + (60 * 1024).to_bytes(4, "big") + b"\x00" * 5000)
    assert budget.total > 5000
    core.connection_lost()
    assert budget.total == 0


# --- RefusalLog ----------------------------------------------------------------------------------


def test_refusals_are_logged_once_per_reason_per_interval() -> None:
    """37 refusals from 12 hosts in one interval are one warning with the counts, written when the interval ends."""
    clock, events = Clock(), list[LogEvent]()
    refusals = RefusalLog(Logger(observer=events.append), "TestProtocolPB", 10.0, clock)
    for i in range(37):
        refusals.refused(TOO_MANY_CONNECTIONS, f"10.0.0.{i % 12}")
    refusals.refused(HEADER_TIMEOUT, "10.0.0.99")
    assert events == []
    clock.advance(10)
    lines = sorted(formatEvent(e) for e in events)
    assert lines == [
        (
            "IPC port TestProtocolPB refused 1 connections from 1 addresses in the last 10 s: "
            "no connection header in time (most from 10.0.0.99: 1)"
        ),
        (
            "IPC port TestProtocolPB refused 37 connections from 12 addresses in the last 10 s: "
            "too many connections (most from 10.0.0.0: 4)"
        ),
    ]
    assert {e["reason"] for e in events} == {TOO_MANY_CONNECTIONS, HEADER_TIMEOUT}
    clock.advance(100)
    assert len(events) == 2  # a quiet interval logs nothing
    refusals.refused(FRAME_TIMEOUT, "10.0.0.5")
    clock.advance(10)
    assert [e["count"] for e in events[2:]] == [1]


def test_refusal_log_flushes_on_stop() -> None:
    """Stopping the port writes what was counted and leaves no timer behind."""
    clock, events = Clock(), list[LogEvent]()
    refusals = RefusalLog(Logger(observer=events.append), "p", 10.0, clock)
    refusals.refused(TOO_MANY_CONNECTIONS, "10.0.0.1")
    refusals.stop()
    assert [e["count"] for e in events] == [1] and clock.getDelayedCalls() == []


def test_protocol_errors_are_detailed_ten_per_interval_then_counted() -> None:
    """The first 10 protocol errors of an interval may be logged one by one; the rest become one count."""
    clock, events = Clock(), list[LogEvent]()
    refusals = RefusalLog(Logger(observer=events.append), "p", 10.0, clock)
    allowed = [refusals.may_detail(f"10.0.0.{i % 3}") for i in range(25)]
    assert allowed == [True] * 10 + [False] * 15
    clock.advance(10)
    [summary] = events
    assert (summary["reason"], summary["count"], summary["addresses"]) == (PROTOCOL_ERRORS_SUPPRESSED, 15, 3)
    assert refusals.may_detail("10.0.0.1")  # a new interval starts afresh


def test_without_a_clock_every_protocol_error_is_detailed() -> None:
    """A factory without a clock (some tests) keeps one line per protocol error."""
    refusals = RefusalLog(Logger(observer=lambda e: None), "p", 10.0, None)
    assert all(refusals.may_detail("10.0.0.1") for _ in range(50))


@pytest.mark.parametrize(
    "message, logged",
    [
        ("Unknown protocol: org.example.FooPB", "Unknown protocol: org.example.FooPB"),
        ("Unknown protocol: \x1b[31mred\x00", "Unknown protocol: \\x1b[31mred\\x00"),
        ("x" * 400, "x" * 300 + "..."),
    ],
    ids=["plain", "control-characters", "long"],
)
def test_sanitised_messages_escape_control_characters_and_are_bounded(message: str, logged: str) -> None:
    """What a client sent may appear in an error message: escaped and cut to 300 characters."""
    assert sanitised(message) == logged
