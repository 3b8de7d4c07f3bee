"""The schedules' firing role on a fake clock and an in-memory key space: once per tick, takeover, churn, forgery.

The ring's get/put, ownership, view and the trigger path are seams here (in-memory
fakes with a latency and a break switch); the real ring is wired and tested by the lead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent

from cortex_rm.dht.errors import RingError
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import RING_SIZE, key_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.events.functions import SCHEDULES_KEY, FunctionSpec, function_key, tick_key
from cortex_rm.events.schedules import TickRecord, encode_scheduled
from cortex_rm.roles.event_schedules import MAX_FIRES_IN_FLIGHT, EventSchedules, lookup_owns

# Ring ids placed from the key of function "f": A owns it, B, C and D follow; EVIL is across the ring.
KEY_F = key_id(function_key("f"))
A, B, C, D = ((KEY_F + i) % RING_SIZE for i in (1, 2, 3, 4))
EVIL, RM = (KEY_F + RING_SIZE // 2) % RING_SIZE, (KEY_F - 1) % RING_SIZE
START_S = 1_700_000_003.0  # 3 s after a multiple of 10 s, 23 s into a minute
T0 = 1_700_000_000_000  # the last 10 s tick at START_S
MINUTE0 = 1_699_999_920_000  # the last even minute at START_S


class FakeKeySpace:
    """One key space for every node: versions ordered as the ring orders them, writers as signed.

    Each node's gets and puts take its ``latency`` (seconds on the fake clock: read, write):
    a get reads the record when it answers, a put lands when it answers.
    """

    def __init__(self, clock: Clock, latency: dict[int, tuple[float, float]] | None = None) -> None:
        self.clock, self.latency = clock, latency or {}
        self.records: dict[str, Record] = {}
        self.broken = False
        self.version = 0

    def write(self, writer: int, key: str, value: bytes) -> Record:
        self.version += 1
        record = Record(key, value, self.version, writer)
        self.records[key] = record
        return record

    def _after(self, node: int, op: int, work):  # type: ignore[no-untyped-def]
        if self.broken:
            return defer.fail(RingError("the ring is broken (test)"))
        delay = self.latency.get(node, (0.0, 0.0))[op]
        if not delay:
            return defer.succeed(work())
        d: defer.Deferred[object] = defer.Deferred()
        self.clock.callLater(delay, lambda: d.callback(work()))
        return d

    def get_as(self, node: int):  # type: ignore[no-untyped-def]
        def get(key: str) -> defer.Deferred[Record | None]:
            return self._after(node, 0, lambda: self.records.get(key))  # type: ignore[no-any-return]

        return get

    def put_as(self, writer: int):  # type: ignore[no-untyped-def]
        def put(key: str, value: bytes) -> defer.Deferred[Record]:
            return self._after(writer, 1, lambda: self.write(writer, key, value))  # type: ignore[no-any-return]

        return put


class Cluster:
    """Nodes sharing a key space; ``owner`` says whose view owns each function's key (per node: churn).

    Every node sees the ring as ``members`` says (A to D and EVIL alive); ``with_view=False``: no view.
    """

    def __init__(self, latency: dict[int, tuple[float, float]] | None = None, with_view: bool = True) -> None:
        self.members = {node: MemberStatus.ALIVE for node in (A, B, C, D, EVIL)}
        self.with_view = with_view
        self.clock = Clock()
        self.clock.advance(START_S)
        self.ring = FakeKeySpace(self.clock, latency)
        self.owners: dict[int, set[str]] = {}  # node -> the keys it believes it owns
        self.fired: list[tuple[int, str, int]] = []
        self.nodes: dict[int, EventSchedules] = {}
        self.hang_fires = False

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def register(self, name: str, schedule: str | None, *, by: int = RM, registered_ms: int | None = None,
                 deleted: bool = False, version: int = 1) -> FunctionSpec:  # fmt: skip
        spec = FunctionSpec(name=name, owner="alice", version=version, code_path=f"/user/alice/{name}.py", code_length=1,
                            code_mtime_ms=1, schedule=schedule, deleted=deleted,
                            registered_ms=self.now_ms() if registered_ms is None else registered_ms)  # fmt: skip
        self.ring.write(by, function_key(name), spec.encode())
        self.ring.write(RM, SCHEDULES_KEY, encode_scheduled([*self.scheduled(), name]))
        return spec

    def scheduled(self) -> list[str]:
        import json

        record = self.ring.records.get(SCHEDULES_KEY)
        return [] if record is None else json.loads(record.value)["functions"]

    def own(self, node: int, *names: str) -> None:
        self.owners.setdefault(node, set()).update(function_key(n) for n in names)

    def disown(self, node: int, *names: str) -> None:
        self.owners.setdefault(node, set()).difference_update(function_key(n) for n in names)

    def fire(self, node: int):  # type: ignore[no-untyped-def]
        def fire(spec: FunctionSpec, tick: int) -> defer.Deferred[object]:
            self.fired.append((node, spec.name, tick))
            return defer.Deferred() if self.hang_fires else defer.succeed(None)

        return fire

    def start(self, node: int, delay_s: float = 0.0) -> EventSchedules:
        if delay_s:
            self.clock.advance(delay_s)
        schedules = EventSchedules(
            self.clock, me=node, resource_managers=frozenset({RM}), get=self.ring.get_as(node), put=self.ring.put_as(node),
            owns=lambda key: key in self.owners.get(node, set()), fire=self.fire(node), wall_clock_ms=self.now_ms,
            refresh_s=30.0, view=(lambda: self.view(node)) if self.with_view else None,
        )  # fmt: skip
        self.nodes[node] = schedules
        schedules.start()
        return schedules

    def view(self, node: int) -> RingView:
        members = tuple((Peer(n, ""), status, 1) for n, status in self.members.items() if n != node)
        return RingView(Peer(node, ""), RingState.MEMBER, 1, None, (), 0, members, len(self.ring.records))

    def run(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def ticks(self, name: str, node: int | None = None) -> list[int]:
        return [t for n, f, t in self.fired if f == name and (node is None or n == node)]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    for node in c.nodes.values():
        node.stop()


def texts(events: list[LogEvent], pattern: str) -> list[str]:
    return [t for t in map(formatEvent, events) if re.search(pattern, t)]


def test_each_tick_fires_once_on_the_owner(cluster: Cluster) -> None:
    """The owner fires every tick once, claiming it first; a node that does not own the key fires nothing."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.start(A), cluster.start(B)
    cluster.run(35)
    assert cluster.fired == [(A, "f", T0 + 10_000), (A, "f", T0 + 20_000), (A, "f", T0 + 30_000)]
    assert TickRecord.decode(cluster.ring.records[tick_key("f")].value) == TickRecord(T0 + 30_000, A)
    assert cluster.nodes[A].fired == 3 and cluster.nodes[B].fired == 0


def test_cron_schedule(cluster: Cluster) -> None:
    """A cron schedule fires at its minutes (UTC)."""
    cluster.register("c", "*/2 * * * *")
    cluster.own(A, "c")
    cluster.start(A)
    cluster.run(5 * 60)  # START is 23 s into an odd minute: even minutes begin at +37 s, +157 s, +277 s
    assert cluster.ticks("c") == [MINUTE0 + 120_000, MINUTE0 + 240_000, MINUTE0 + 360_000]


def test_a_missed_tick_is_fired_at_start_but_not_before_registration(cluster: Cluster) -> None:
    """A function registered before the latest tick, never fired, fires that tick at once; one registered after it waits."""
    cluster.register("old", "every 10s", registered_ms=T0 - 60_000)
    cluster.register("new", "every 10s")
    cluster.own(A, "old", "new")
    cluster.start(A)
    assert cluster.ticks("old") == [T0] and cluster.ticks("new") == []
    cluster.run(8)
    assert cluster.ticks("old") == [T0, T0 + 10_000] and cluster.ticks("new") == [T0 + 10_000]


def test_owner_death_the_successor_fires_the_latest_missed_tick_once(cluster: Cluster) -> None:
    """The owner dies; the successor takes the key over at its next refresh, fires the latest missed tick once
    (not the backlog), then every tick."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.start(A)
    cluster.start(B, delay_s=3.0)  # B refreshes at START+3, +33, +63
    cluster.run(9)  # START+12: A fired T0+10
    cluster.nodes[A].stop()  # A dies (its timers with it) ...
    cluster.disown(A, "f")
    cluster.own(B, "f")  # ... and the ring moves the key to B
    cluster.run(48)  # to START+60
    assert cluster.ticks("f", A) == [T0 + 10_000]
    # T0+20 and T0+30 were missed; at START+33 B fires T0+30 once, then T0+40, T0+50, T0+60.
    assert cluster.ticks("f", B) == [T0 + 30_000, T0 + 40_000, T0 + 50_000, T0 + 60_000]


def test_two_owners_during_churn_fire_at_most_twice_and_say_so(log_events: list[LogEvent]) -> None:
    """Two nodes that both believe they own the key both read the old tick before either claims; A's claim and
    read-back finish before B's slow claim lands, so both fire: a tick fires at most twice, and A, seeing B's
    claim on the tick it fired itself, logs the duplicate."""
    cluster = Cluster(latency={A: (0.05, 0.05), B: (0.05, 0.3)})
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.own(B, "f")
    cluster.start(A), cluster.start(B)
    cluster.run(12, step=0.01)
    assert sorted(cluster.fired) == [(A, "f", T0 + 10_000), (B, "f", T0 + 10_000)]
    assert not texts(log_events, "was fired twice")
    cluster.run(6, step=0.01)  # the next tick's read shows it
    assert texts(log_events, rf"f's tick {T0 + 10_000} was fired twice, by us and by {B:040x}")
    cluster.disown(A, "f")  # the ring settles: B owns it
    cluster.run(30, step=0.01)
    ticks = cluster.ticks("f")
    assert all(ticks.count(t) <= 2 for t in ticks)
    assert cluster.ticks("f", A) == [T0 + 10_000, T0 + 20_000]
    assert cluster.ticks("f", B) == [T0 + 10_000, T0 + 20_000, T0 + 30_000, T0 + 40_000, T0 + 50_000]
    for node in cluster.nodes.values():
        node.stop()


def test_two_owners_racing_settle_on_the_last_claim(log_events: list[LogEvent]) -> None:
    """Both owners read the old tick and claim it; reading the claim back, the one written over yields."""
    cluster = Cluster(latency={A: (0.05, 0.05), B: (0.05, 0.05)})
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.own(B, "f")
    cluster.start(A), cluster.start(B)
    cluster.run(25, step=0.01)
    assert sorted(cluster.ticks("f")) == [T0 + 10_000, T0 + 20_000]
    assert texts(log_events, rf"tick {T0 + 10_000} was claimed by {B:040x} too .*: it fires it, we do not")
    for node in cluster.nodes.values():
        node.stop()


def test_two_owners_without_a_race_fire_once(cluster: Cluster, log_events: list[LogEvent]) -> None:
    """When one claim lands before the other node reads, the second sees it and does not fire."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.own(B, "f")
    cluster.start(A), cluster.start(B)
    cluster.run(25)
    assert sorted(cluster.ticks("f")) == [T0 + 10_000, T0 + 20_000]
    assert texts(log_events, rf"tick {T0 + 10_000} was fired by {A:040x}")


def test_a_successors_far_future_tick_does_not_silence_the_schedule(
    cluster: Cluster, log_events: list[LogEvent]
) -> None:
    """Even a legitimate successor writing a tick a day ahead is ignored (logged); one writing the very next tick
    silences that tick only (what a member among the key's first successors can still do)."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.ring.write(B, tick_key("f"), TickRecord(T0 + 86_400_000, B).encode())
    cluster.start(A)
    cluster.run(8)
    assert cluster.ticks("f") == [T0 + 10_000]
    assert texts(log_events, rf"tick record by {B:040x} is \d+ ms in the future: ignored \(1 so far\)")
    cluster.ring.write(B, tick_key("f"), TickRecord(T0 + 20_000, B).encode())  # the next tick, early
    cluster.run(20)
    assert cluster.ticks("f") == [T0 + 10_000, T0 + 30_000]
    assert texts(log_events, rf"tick {T0 + 20_000} was fired by {B:040x}")


def test_a_forged_claim_from_a_non_successor_does_not_silence_a_tick(
    cluster: Cluster, log_events: list[LogEvent]
) -> None:
    """A live member far from the key writing each next tick a second before it is due silences none of them;
    its records are logged as ignored at the 1st, 10th and 100th only."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.start(A)
    for n in range(1, 121):  # START+6, +16, ...: one second before each tick
        forged = TickRecord(T0 + 10_000 * n, EVIL).encode()
        cluster.clock.callLater(10 * n - 7, cluster.ring.write, EVIL, tick_key("f"), forged)
    cluster.run(1200)
    assert cluster.ticks("f") == [T0 + 10_000 * n for n in range(1, 121)]
    ignored = texts(log_events, rf"f's tick record by {EVIL:040x} is from a member that may not fire it")
    assert [re.findall(r"\((\d+) so far\)", t) for t in ignored] == [["1"], ["10"], ["100"]]
    assert not texts(log_events, "was fired by|fires it, we do not")


def test_a_forged_claim_written_over_ours_does_not_make_the_owner_yield(log_events: list[LogEvent]) -> None:
    """A far member's claim landing between the owner's claim and its read-back is not another owner's: A fires."""
    cluster = Cluster(latency={A: (0.05, 0.05)})
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.start(A)
    # The tick at START+7: A reads by +0.05, its claim lands at +0.10, its read-back reads at +0.15.
    cluster.clock.callLater(7.12, cluster.ring.write, EVIL, tick_key("f"), TickRecord(T0 + 10_000, EVIL).encode())
    cluster.run(8, step=0.01)
    assert cluster.ticks("f") == [T0 + 10_000]
    assert texts(log_events, rf"record by {EVIL:040x} is from a member that may not fire it")
    for node in cluster.nodes.values():
        node.stop()


@pytest.mark.parametrize(("other", "fires_twice"), [(C, False), (D, True)], ids=["third-C", "fourth-D"])
def test_a_successors_claim_still_prevents_a_double_fire(
    other: int, fires_twice: bool, log_events: list[LogEvent]
) -> None:
    """A node that still owns the key in its view (the ring's third live member from the key, C) claims and fires
    the tick first: the owner A believes it and does not fire.  A fourth member's claim (D) is not believed."""
    cluster = Cluster()
    cluster.register("f", "every 10s")
    cluster.own(other, "f")
    cluster.own(A, "f")
    cluster.start(other), cluster.start(A)  # the other's timer runs first, and its claim lands before A reads
    cluster.run(8)
    assert cluster.ticks("f", other) == [T0 + 10_000]
    assert cluster.ticks("f", A) == ([T0 + 10_000] if fires_twice else [])
    assert bool(texts(log_events, rf"tick {T0 + 10_000} was fired by {other:040x}")) is not fires_twice
    for node in cluster.nodes.values():
        node.stop()


@pytest.mark.parametrize("with_view", [True, False])
def test_the_dead_owners_claim_is_believed_by_the_node_taking_over(with_view: bool) -> None:
    """A fires a tick and dies; B, taking the key over before the next tick, sees A's record (A is dead in its view,
    or, with no view, lies between the key and B) and does not fire that tick again.  The next claim of C, B's
    successor: believed with the ring's view (that tick is C's), not without one (only the arc up to B)."""
    cluster = Cluster(with_view=with_view)
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.start(A)
    cluster.run(8)  # START+8: A fired T0+10 at START+7
    cluster.nodes[A].stop()
    cluster.members[A] = MemberStatus.DEAD
    cluster.disown(A, "f")
    cluster.own(B, "f")
    cluster.start(B)  # its first refresh takes the key over
    cluster.run(10)  # START+18: B fired T0+20
    assert cluster.ticks("f", A) == [T0 + 10_000] and cluster.ticks("f", B) == [T0 + 20_000]
    cluster.clock.callLater(8, cluster.ring.write, C, tick_key("f"), TickRecord(T0 + 30_000, C).encode())
    cluster.run(12)  # START+30
    assert cluster.ticks("f", B) == [T0 + 20_000] + ([] if with_view else [T0 + 30_000])
    cluster.nodes[B].stop()


def test_a_tick_record_naming_another_writer_is_ignored(cluster: Cluster, log_events: list[LogEvent]) -> None:
    """A tick record whose "by" is not its signed writer is not believed, even naming a legitimate successor."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.ring.write(EVIL, tick_key("f"), TickRecord(T0 + 10_000, B).encode())
    cluster.start(A)
    cluster.run(8)
    assert cluster.ticks("f") == [T0 + 10_000]
    assert texts(log_events, rf"record by {EVIL:040x} names {B:040x}: ignored")


def test_registrations_not_written_by_an_rm_are_ignored(cluster: Cluster, log_events: list[LogEvent]) -> None:
    """A registration (or the schedules list) written by anyone but an RM fires nothing."""
    cluster.register("f", "every 10s", by=EVIL)
    cluster.own(A, "f")
    cluster.start(A)
    cluster.run(15)
    assert cluster.fired == []
    assert texts(log_events, f"registration was written by {EVIL:040x}, not an RM")
    cluster.ring.write(EVIL, SCHEDULES_KEY, encode_scheduled(["g"]))
    cluster.run(30)
    assert texts(log_events, "scheduled functions' record was written by .*not an RM")


def test_deleted_or_unscheduled_functions_stop(cluster: Cluster) -> None:
    """A function deleted, or registered again without a schedule, stops firing at the next refresh."""
    cluster.register("f", "every 10s")
    cluster.register("g", "every 10s")
    cluster.own(A, "f", "g")
    cluster.start(A)
    cluster.run(12)
    cluster.register("f", "every 10s", deleted=True, version=2)
    cluster.register("g", None, version=2)
    cluster.run(30)  # the refresh at START+30 drops both
    assert cluster.ticks("f") == cluster.ticks("g") == [T0 + 10_000, T0 + 20_000, T0 + 30_000]
    assert cluster.nodes[A].owned == {}


def test_a_changed_schedule_is_rearmed(cluster: Cluster) -> None:
    """A new version with another schedule is followed from the next refresh, which fires its latest tick
    since the registration, as for any missed tick."""
    cluster.register("f", "every 1h")
    cluster.own(A, "f")
    cluster.start(A)
    cluster.register("f", "every 10s", version=2)
    cluster.run(45)
    assert cluster.ticks("f") == [T0 + 30_000, T0 + 40_000]


def test_the_key_moving_away_stops_firing_at_the_next_tick(cluster: Cluster) -> None:
    """At each tick the node asks whether it still owns the key: one that lost it fires nothing."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    cluster.start(A)
    cluster.run(12)
    cluster.disown(A, "f")
    cluster.run(10)
    assert cluster.ticks("f") == [T0 + 10_000]
    assert cluster.nodes[A].owned == {}


def test_a_ring_failure_at_a_tick_is_caught_up_at_the_next_refresh(cluster: Cluster) -> None:
    """Reads failing at the tick fire nothing; the next refresh fires that tick once, before the next tick."""
    cluster.register("m", "* * * * *")
    cluster.own(A, "m")
    cluster.start(A)
    cluster.ring.broken = True
    cluster.run(40)  # START+40: the minute's tick at START+37 failed (and the refresh at START+30)
    assert cluster.ticks("m") == []
    cluster.ring.broken = False
    cluster.run(20)  # the refresh at START+60 catches up
    assert cluster.ticks("m") == [MINUTE0 + 120_000]
    cluster.run(40)  # and the next minute fires as usual
    assert cluster.ticks("m") == [MINUTE0 + 120_000, MINUTE0 + 180_000]


def test_fires_in_flight_are_bounded(cluster: Cluster, log_events: list[LogEvent]) -> None:
    """A trigger path that never answers holds at most MAX_FIRES_IN_FLIGHT fires of one function; later ticks are skipped."""
    cluster.hang_fires = True
    cluster.register("f", "every 1s")
    cluster.own(A, "f")
    cluster.start(A)
    cluster.run(MAX_FIRES_IN_FLIGHT + 3)
    assert len(cluster.ticks("f")) == MAX_FIRES_IN_FLIGHT
    assert texts(log_events, "still firing")


def test_stop_cancels_every_timer(cluster: Cluster) -> None:
    """After stop nothing is left on the clock and nothing fires."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    node = cluster.start(A)
    node.stop()
    node.stop()  # twice is fine
    assert cluster.clock.getDelayedCalls() == []
    cluster.run(30)
    assert cluster.fired == []


@pytest.mark.expect_logged_errors("firing f's tick")
def test_a_failing_fire_is_logged_and_the_schedule_goes_on(cluster: Cluster) -> None:
    """The trigger path failing is logged; the next tick fires as usual."""
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    calls: list[int] = []

    def fire(spec: FunctionSpec, tick: int) -> defer.Deferred[object]:
        calls.append(tick)
        return defer.fail(RuntimeError("no executor"))

    node = EventSchedules(cluster.clock, me=A, resource_managers=frozenset({RM}), get=cluster.ring.get_as(A),
                          put=cluster.ring.put_as(A), owns=lambda key: True, fire=fire, wall_clock_ms=cluster.now_ms)  # fmt: skip
    node.start()
    cluster.run(25)
    node.stop()
    assert calls == [T0 + 10_000, T0 + 20_000]


def test_lookup_owns() -> None:
    """``lookup_owns`` asks the ring for the owner of the key's point and compares it with our id."""
    asked: list[int] = []

    def lookup(point: int) -> defer.Deferred[Peer]:
        asked.append(point)
        return defer.succeed(Peer(A, "127.0.0.1:1"))

    results: list[bool] = []
    lookup_owns(lookup, A)("k").addCallback(results.append)
    lookup_owns(lookup, B)("k").addCallback(results.append)
    assert results == [True, False]
    import hashlib

    assert asked == [int.from_bytes(hashlib.sha1(b"k").digest(), "big")] * 2


def test_a_node_stopped_while_claiming_fires_nothing() -> None:
    """A node that stops (dies) while its claim is on the way does not fire after the stop."""
    cluster = Cluster(latency={A: (0.05, 0.5)})
    cluster.register("f", "every 10s")
    cluster.own(A, "f")
    node = cluster.start(A)
    cluster.run(7.2, step=0.01)  # the tick at START+7 read the record; the claim lands at START+7.55
    node.stop()
    cluster.run(5, step=0.01)
    assert cluster.fired == []
