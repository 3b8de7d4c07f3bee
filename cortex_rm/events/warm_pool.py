"""Which sandbox runs an activation: the warm pool's decisions, without IO.

A node keeps at most ``max_sandboxes`` sandboxes, warm or busy, for all functions
together, whose memory limits sum to at most ``max_memory_mb``.  Each runs one function version (``key``: name and version) and one
activation at a time.  For an activation of ``key`` the pool:

1. reuses the idle sandbox of ``key`` used most recently (a warm start);
2. else, when ``key`` has fewer than its ``max_concurrency`` sandboxes and the node
   has room, starts a new one (a cold start) -- making room by stopping the idle
   sandboxes of other functions used least recently, if it must;
3. else it is busy: the activation waits in the executor's queue, or goes to the
   next replica.

An idle sandbox unused for ``idle_timeout_s`` is stopped (``expired``).  A sandbox
whose activation timed out, ran out of memory or whose runner died is discarded,
never reused.  Times are the caller's (seconds), so the pool is tested with a fake
clock.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

Key = tuple[str, int]


class SlotState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"


@dataclass(eq=False)
class Slot:
    """One sandbox, as the pool counts it."""

    number: int
    key: Key
    state: SlotState = SlotState.STARTING
    last_used: float = 0.0
    memory_mb: int = 0


@dataclass(frozen=True)
class Placement:
    """The pool's answer: reuse ``warm``, or start ``new`` after stopping ``evict``; neither: busy."""

    warm: Slot | None = None
    new: Slot | None = None
    evict: tuple[Slot, ...] = ()

    @property
    def busy(self) -> bool:
        return self.warm is None and self.new is None


@dataclass
class WarmPool:
    """The sandboxes of one node (see the module docstring)."""

    max_sandboxes: int
    idle_timeout_s: float
    max_memory_mb: int = 1 << 40
    slots: dict[int, Slot] = field(default_factory=dict)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def of(self, key: Key) -> list[Slot]:
        return [s for s in self.slots.values() if s.key == key]

    def fits(self, memory_mb: int) -> bool:
        """Whether a sandbox of ``memory_mb`` can ever run here."""
        return memory_mb <= self.max_memory_mb

    def busy(self, key: Key, max_concurrency: int, memory_mb: int = 0) -> bool:
        """Whether an activation of ``key`` would have to wait now."""
        return self._place(key, max_concurrency, 0.0, memory_mb, commit=False).busy

    def place(self, key: Key, max_concurrency: int, now: float, memory_mb: int = 0) -> Placement:
        """Take a sandbox for an activation of ``key`` (the slot is BUSY, or STARTING for a new one)."""
        return self._place(key, max_concurrency, now, memory_mb, commit=True)

    def ready(self, slot: Slot) -> None:
        """A new sandbox's runner is up (it runs the activation it was started for)."""
        if slot.number in self.slots:
            slot.state = SlotState.BUSY

    def release(self, slot: Slot, now: float) -> None:
        """The activation ended and the sandbox is fine: warm for the next one."""
        if slot.number in self.slots:
            slot.state, slot.last_used = SlotState.IDLE, now

    def discard(self, slot: Slot) -> None:
        """The sandbox is gone (or must go): never reused."""
        self.slots.pop(slot.number, None)

    def expired(self, now: float) -> list[Slot]:
        """Idle sandboxes unused for ``idle_timeout_s``: removed from the pool, for the caller to stop."""
        gone = [s for s in self.slots.values() if s.state is SlotState.IDLE and now - s.last_used >= self.idle_timeout_s]
        for slot in gone:
            self.discard(slot)
        return gone

    def _place(self, key: Key, max_concurrency: int, now: float, memory_mb: int, commit: bool) -> Placement:
        idle = [s for s in self.of(key) if s.state is SlotState.IDLE]
        if idle:
            warm = max(idle, key=lambda s: s.last_used)
            if commit:
                warm.state, warm.last_used = SlotState.BUSY, now
            return Placement(warm=warm)
        if len(self.of(key)) >= max_concurrency:
            return Placement()
        if not self.fits(memory_mb):
            return Placement()
        idle_others = sorted((s for s in self.slots.values() if s.state is SlotState.IDLE and s.key != key),
                             key=lambda s: s.last_used)  # fmt: skip
        count, used = len(self.slots), sum(s.memory_mb for s in self.slots.values())
        evict: list[Slot] = []
        while count >= self.max_sandboxes or used + memory_mb > self.max_memory_mb:
            if not idle_others:
                return Placement()
            gone = idle_others.pop(0)
            evict.append(gone)
            count, used = count - 1, used - gone.memory_mb
        if not commit:
            return Placement(new=Slot(0, key))
        for slot in evict:
            self.discard(slot)
        new = Slot(next(self._numbers), key, SlotState.STARTING, now, memory_mb)
        self.slots[new.number] = new
        return Placement(new=new, evict=tuple(evict))
