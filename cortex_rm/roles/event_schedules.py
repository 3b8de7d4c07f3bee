"""Firing the functions' schedules: each tick once cluster-wide, by the member that owns the function's key.

Every node runs ``EventSchedules``.  Every ``refresh_s`` it reads the RM's list of
functions with a schedule (``SCHEDULES_KEY``), asks for each whether this node owns
the function's key now (``owns``), and for the ones it owns reads the registration
(``function_key(name)``: a ``FunctionSpec`` written by an RM, so only a record whose
writer is one of ``resource_managers`` is believed; a deleted one or one without a
schedule is dropped).  For each function it owns it keeps a timer on the next tick.

At a tick (and at each refresh, which is how a node taking over catches up):

1. The *due* tick is the schedule's latest tick at or before now (never one before
   the registration).  Nothing happens when this node already knows it was fired.
2. At a timer, the node asks ``owns`` again: a node that lost the key stops there.
3. It reads the tick record (``tick_key(name)``, ``{"tick": ms, "by": ring id}``, any
   member may write it).  It believes it only from a writer -- the ring id that signed
   it, which the key space checks; ``by`` must name it -- that could have fired it
   (``could_have_fired``): in this node's ``view`` of the ring, one of the first
   ``TICK_FIRERS`` live members at or after the function's key, or a dead or left
   member before the last of them (a former owner); with no view, anyone on the arc
   from the key to this node.  Others' records are ignored, and logged (the 1st, 10th,
   100th, then every 1000th of a function).  A recorded tick at or after the due one:
   already fired, nothing to do.  A recorded tick *beyond the schedule's next tick* is
   not believed either: a far-future tick must not silence a schedule for ever.
4. It writes the due tick there (the claim) and reads it back: when another node's
   claim on that tick (or a later one) came after ours, that node fires and we do
   not.  Then it fires (``fire(spec, tick)``, the trigger path; its Deferred is only
   logged).  A failed read or claim fires nothing: the next refresh tries again, if no
   later tick has come by then (a failed read-back fires: the claim stands).

So a tick missed while its owner was dead is fired once by the successor that takes
the key over, at its next refresh: only the latest missed tick, never a backlog.

Not exactly once.  The ring has no compare-and-set: two nodes that both believe they
own the key (churn, before stabilisation) can both read the old tick before either
claims.  The read-back settles most such races (the last claim written wins, the
other node logs that it yields), but not when one node's claim and read-back both
finish before the other's claim lands: both fire.  A tick is fired at most once per
such node (twice with two owners; so too when one owner's view does not show the
other yet), and the next tick's read shows it: the node that sees another writer on
the tick it fired itself logs the duplicate.

What a hostile member can still do (the tick prefix is open to every member).  As one
of the key's first ``TICK_FIRERS`` live members -- which takes a ring id on that arc,
a new key and its puzzle per try (``ring_trust.py``), as owning the key does -- write
the next tick shortly before it is due, which silences that tick (the owner logs
whose record it skipped).  From anywhere, write an older tick or one it may not write,
which at most makes a node taking over fire the latest tick again.  With no ``view``,
any key made to hash onto the arc from the function's key to its owner (no puzzle:
its signer need not be a member) can sign a silencing tick.  Owning the key, it can
also simply not fire: the schedule stops until the key moves.  It cannot make anyone
fire a tick early, nor twice by itself, nor a function an RM did not register.
Sending a tick straight to an executor, it can run a scheduled function on one of its
past ticks again, or on a tick up to a minute early, with that tick's own event only
(``roles/event_executor.py``: a tick carries no user).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import distance, format_id, key_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.events.functions import SCHEDULES_KEY, FunctionSpec, InvalidFunction, function_key, tick_key
from cortex_rm.events.schedules import Schedule, TickRecord, could_have_fired, decode_scheduled
from cortex_rm.yarn.transitions import TransitionTable

log = Logger()

_LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
REFRESH_S = 30.0
#: Fires of one function whose Deferred has not fired yet; a tick beyond that is skipped (logged).
MAX_FIRES_IN_FLIGHT = 4

RingGet = Callable[[str], defer.Deferred[Record | None]]
RingPut = Callable[[str, bytes], defer.Deferred[Record]]
Owns = Callable[[str], bool | defer.Deferred[bool]]
Fire = Callable[[FunctionSpec, int], defer.Deferred[object]]


def lookup_owns(lookup: Callable[[int], defer.Deferred[Peer]], me: int) -> Callable[[str], defer.Deferred[bool]]:
    """An ``owns`` from the ring's lookup: whether the owner of ``key_id(key)`` is ring id ``me``."""

    def owns(key: str) -> defer.Deferred[bool]:
        return lookup(key_id(key)).addCallback(lambda peer: peer.node_id == me)

    return owns


class SchedulesState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class SchedulesEvent(enum.Enum):
    START = "start"
    STOP = "stop"


LIFECYCLE: TransitionTable[SchedulesState, SchedulesEvent] = TransitionTable(
    "event schedules",
    {
        (SchedulesState.NEW, SchedulesEvent.START): SchedulesState.RUNNING,
        (SchedulesState.NEW, SchedulesEvent.STOP): SchedulesState.STOPPED,
        (SchedulesState.RUNNING, SchedulesEvent.STOP): SchedulesState.STOPPED,
    },
    ignored=[(SchedulesState.STOPPED, SchedulesEvent.STOP)],
)


@dataclass(eq=False)
class _Owned:
    """A function whose key this node owns: its registration, timer, and the highest tick known fired."""

    spec: FunctionSpec
    schedule: Schedule
    timer: IDelayedCall | None = None
    armed_for: int | None = None
    known: int = -1  # the highest tick fired, by us or (the tick record says) another node
    fired: int = -1  # the highest tick this node fired itself
    busy: bool = False
    in_flight: int = 0
    ignored: int = 0  # tick records not believed


class EventSchedules:
    """Fires the schedules of the functions whose keys this node owns (module doc)."""

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        me: int,
        resource_managers: frozenset[int],
        get: RingGet,
        put: RingPut,
        owns: Owns,
        fire: Fire,
        wall_clock_ms: Callable[[], int],
        refresh_s: float = REFRESH_S,
        view: Callable[[], RingView] | None = None,
    ) -> None:
        self.reactor = reactor
        self.me = me
        self.resource_managers = resource_managers
        self._get, self._put, self._owns, self._fire = get, put, owns, fire
        self.wall_clock_ms = wall_clock_ms
        self.refresh_s = refresh_s
        self.view = view  # whose tick records are believed (module doc, step 3)
        self.state = SchedulesState.NEW
        self.owned: dict[str, _Owned] = {}
        self.fired = 0  # ticks this node fired
        self._loop: task.LoopingCall | None = None
        self._refreshing = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Refresh now and every ``refresh_s``."""
        self._move(SchedulesEvent.START)
        if not self.resource_managers:
            log.warn("no [ring] resource_managers configured: no function registration is believed, no schedule fires")
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = self.reactor
        self._loop.start(self.refresh_s, now=True)

    def stop(self) -> None:
        """Stop refreshing and cancel every timer (fires under way go on)."""
        if not self._move(SchedulesEvent.STOP):
            return
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for name in list(self.owned):
            self._drop(name)

    def is_running(self) -> bool:
        return self.state is SchedulesState.RUNNING

    def _move(self, event: SchedulesEvent) -> bool:
        new = LIFECYCLE.next_state(self.state, event)
        if new is None:
            return False
        self.state = new
        return True

    # ------------------------------------------------------------ refresh: what this node owns

    def refresh(self) -> defer.Deferred[None]:
        """Re-read the scheduled functions, keep the owned ones armed, catch up on due ticks; never fails."""
        d = defer.ensureDeferred(self._refresh())
        return d.addErrback(lambda f: log.failure("refreshing the event schedules failed", f))

    async def _refresh(self) -> None:
        if self._refreshing or not self.is_running():
            return
        self._refreshing = True
        try:
            names = await self._scheduled_names()
            if names is None:
                return
            for name in set(self.owned) - set(names):
                self._drop(name, "its schedule was removed")
            for name in names:
                if not self.is_running():  # stopped while we waited for the ring
                    return
                await self._refresh_one(name)
        finally:
            self._refreshing = False

    async def _scheduled_names(self) -> Sequence[str] | None:
        """The RM's list (None: unreadable now, keep what we have)."""
        try:
            record = await self._get(SCHEDULES_KEY)
        except Exception as e:
            log.info("the scheduled functions could not be read: {error}", error=e)
            return None
        if record is None:
            return ()
        if record.writer not in self.resource_managers:
            log.warn("the scheduled functions' record was written by {writer}, not an RM: ignored",
                     writer=format_id(record.writer))  # fmt: skip
            return None
        try:
            return decode_scheduled(record.value)
        except InvalidFunction as e:
            log.warn("the scheduled functions' record is malformed: {error}", error=e)
            return None

    async def _refresh_one(self, name: str) -> None:
        key = function_key(name)
        try:
            mine = await defer.maybeDeferred(self._owns, key)
        except Exception as e:
            log.info("whether we own {function}'s key is unknown now: {error}", function=name, error=e)
            return
        if not mine:
            self._drop(name, "its key moved to another node")
            return
        try:
            registration = await self._registration(name)
        except Exception as e:
            log.info("{function}'s registration could not be read: {error}", function=name, error=e)
            return
        if registration is None:
            self._drop(name, "it has no schedule now")
            return
        self._keep(registration)
        await self._attempt(name, ask_owner=False)

    async def _registration(self, name: str) -> tuple[FunctionSpec, Schedule] | None:
        """The RM's registration of ``name`` and its parsed schedule (None: none, deleted, or no schedule)."""
        record = await self._get(function_key(name))
        if record is None:
            return None
        if record.writer not in self.resource_managers:
            log.warn("{function}'s registration was written by {writer}, not an RM: ignored", function=name,
                     writer=format_id(record.writer))  # fmt: skip
            return None
        try:
            spec = FunctionSpec.decode(record.value)
            if spec.name != name:
                raise InvalidFunction(f"it names {spec.name!r}")
            if spec.deleted or spec.schedule is None:
                return None
            return spec, Schedule.parse(spec.schedule)
        except InvalidFunction as e:
            log.warn("{function}'s registration is not usable for its schedule: {error}", function=name, error=e)
            return None

    def _keep(self, registration: tuple[FunctionSpec, Schedule]) -> None:
        spec, schedule = registration
        entry = self.owned.get(spec.name)
        if entry is None:
            entry = self.owned[spec.name] = _Owned(spec, schedule)
            log.info("{function}'s key is ours: firing its schedule {schedule}", function=spec.name,
                     schedule=schedule.text)  # fmt: skip
        elif entry.spec != spec:
            entry.spec, entry.schedule = spec, schedule
        self._arm(entry)

    def _drop(self, name: str, why: str = "") -> None:
        entry = self.owned.pop(name, None)
        if entry is None:
            return
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        if why:
            log.info("{function}'s schedule is no longer ours to fire: {why}", function=name, why=why)

    # ------------------------------------------------------------ ticks

    def _arm(self, entry: _Owned) -> None:
        """The timer on the next tick (re-armed when the schedule or the clock moved it)."""
        now = self.wall_clock_ms()
        tick = entry.schedule.next_tick(now)
        if entry.timer is not None and entry.timer.active():
            if entry.armed_for == tick:
                return
            entry.timer.cancel()
        entry.armed_for = tick
        entry.timer = self.reactor.callLater(max(0.0, (tick - now) / 1000), self._timer, entry)

    def _timer(self, entry: _Owned) -> None:
        entry.timer = None
        if self.owned.get(entry.spec.name) is not entry or not self.is_running():
            return
        self._arm(entry)
        d = defer.ensureDeferred(self._attempt(entry.spec.name, ask_owner=True))
        d.addErrback(lambda f: log.failure("firing {function}'s tick failed", f, function=entry.spec.name))

    async def _attempt(self, name: str, ask_owner: bool) -> None:
        """Fire the due tick unless it is known fired (module doc, steps 1-4)."""
        entry = self.owned.get(name)
        if entry is None or entry.busy:
            return
        now = self.wall_clock_ms()
        due = entry.schedule.last_tick(now)
        if due is None or due < entry.spec.registered_ms or due <= entry.known:
            return
        entry.busy = True
        try:
            await self._claim_and_fire(entry, due, now, ask_owner)
        finally:
            entry.busy = False

    async def _claim_and_fire(self, entry: _Owned, due: int, now: int, ask_owner: bool) -> None:
        name = entry.spec.name
        try:
            if ask_owner and not await defer.maybeDeferred(self._owns, function_key(name)):
                self._drop(name, "its key moved to another node")
                return
            recorded = self._believed(entry, await self._get(tick_key(name)), now)
        except Exception as e:
            log.info("{function}'s tick {tick} waits: {error}", function=name, tick=due, error=e)
            return
        if not self._still_ours(entry):
            return
        if recorded is not None:
            if recorded.tick_ms == entry.fired and recorded.by != self.me:
                log.warn(
                    "{function}'s tick {tick} was fired twice, by us and by {other} (both owned its key during churn)",
                    function=name, tick=recorded.tick_ms, other=format_id(recorded.by),
                )  # fmt: skip
            entry.known = max(entry.known, recorded.tick_ms)
            if recorded.tick_ms >= due:
                if recorded.by != self.me:
                    log.info("{function}'s tick {tick} was fired by {other}", function=name, tick=recorded.tick_ms,
                             other=format_id(recorded.by))  # fmt: skip
                return
        if entry.in_flight >= MAX_FIRES_IN_FLIGHT:
            entry.known = due
            log.warn("{function}'s tick {tick} skipped: {count} of its earlier ticks are still firing",
                     function=name, tick=due, count=entry.in_flight)  # fmt: skip
            return
        try:
            await self._put(tick_key(name), TickRecord(due, self.me).encode())
        except Exception as e:
            log.info("{function}'s tick {tick} could not be claimed: {error}", function=name, tick=due, error=e)
            return
        entry.known = max(entry.known, due)
        if await self._claimed_by_another(entry, due) or not self._still_ours(entry):
            return
        entry.fired = due
        self.fired += 1
        log.info("{function}'s tick {tick} fires (version {version})", function=name, tick=due,
                 version=entry.spec.version)  # fmt: skip
        self._start_fire(entry, due)

    def _still_ours(self, entry: _Owned) -> bool:
        """Whether, after waiting for the ring, we still run and still fire this function."""
        return self.is_running() and self.owned.get(entry.spec.name) is entry

    async def _claimed_by_another(self, entry: _Owned, due: int) -> bool:
        """Read the claim back: another node's claim on this tick (or a later one) written over ours wins."""
        name = entry.spec.name
        try:
            recorded = self._believed(entry, await self._get(tick_key(name)), self.wall_clock_ms())
        except Exception as e:  # our claim stands: better a tick fired twice than never
            log.info("{function}'s claim on tick {tick} could not be read back: {error}", function=name, tick=due,
                     error=e)  # fmt: skip
            return False
        if recorded is None or recorded.by == self.me or recorded.tick_ms < due:
            return False
        entry.known = max(entry.known, recorded.tick_ms)
        log.info("{function}'s tick {tick} was claimed by {other} too (both own its key now): it fires it, we do not",
                 function=name, tick=recorded.tick_ms, other=format_id(recorded.by))  # fmt: skip
        return True

    def _believed(self, entry: _Owned, record: Record | None, now: int) -> TickRecord | None:
        """The tick record, if it is one, from a member that could have fired it, not beyond the next tick (step 3)."""
        if record is None:
            return None
        recorded: TickRecord | None = None
        try:
            recorded = TickRecord.decode(record.value)
            why = self._doubt(entry, record.writer, recorded, now)
        except InvalidFunction as e:
            why = f"is malformed: {e}"
        if not why:
            return recorded
        entry.ignored += 1  # logged: the 1st, 10th, 100th, then every 1000th of this function's
        if entry.ignored in (1, 10, 100) or entry.ignored % 1000 == 0:
            log.warn("{function}'s tick record by {writer} {why}: ignored ({count} so far)", function=entry.spec.name,
                     writer=format_id(record.writer), why=why, count=entry.ignored)  # fmt: skip
        return None

    def _doubt(self, entry: _Owned, writer: int, recorded: TickRecord, now: int) -> str:
        """Why a well-formed tick record is not believed ("": it is)."""
        if recorded.by != writer:
            return f"names {format_id(recorded.by)}"
        if writer != self.me and not self._could_have_fired(key_id(function_key(entry.spec.name)), writer):
            return "is from a member that may not fire it"
        if recorded.tick_ms > entry.schedule.next_tick(now):
            return f"is {recorded.tick_ms - now} ms in the future"
        return ""

    def _could_have_fired(self, point: int, writer: int) -> bool:
        if self.view is None:  # anyone on the arc from the key to us
            return distance(point, writer) <= distance(point, self.me)
        members = self.view().members
        live = {p.node_id for p, status, _ in members if status in _LIVE} | {self.me}
        return could_have_fired(point, writer, live, {p.node_id for p, status, _ in members if status not in _LIVE})

    def _start_fire(self, entry: _Owned, tick: int) -> None:
        entry.in_flight += 1
        spec = entry.spec

        def done(result: object) -> object:
            entry.in_flight -= 1
            return result

        try:
            d = self._fire(spec, tick)
        except Exception:
            entry.in_flight -= 1
            log.failure("firing {function}'s tick {tick} failed", function=spec.name, tick=tick)
            return
        d.addBoth(done)
        d.addErrback(lambda f: log.failure("firing {function}'s tick {tick} failed", f, function=spec.name, tick=tick))
