"""An RM journal of one eligible node on a fake clock, leading: for running a store's contract suite on its
replicated wrapper (``ha/replicated_fs.py``, ``ha/replicated_registry.py``), where every write is proposed,
committed and applied to the local store before it is acknowledged."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.dht.peer import Peer
from cortex_rm.ha.journal import Entry
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.roles.rm_journal import RmJournal
from tests.support.journal_bus import Bus, Links
from tests.support.rm_core import result_of

ME = 0x5555 << 140


def leading_journal(path: Path, apply: Callable[[Entry], defer.Deferred[None]]) -> RmJournal:
    """A started journal of the one eligible node ``ME``, on ``path`` (its file), once it leads."""
    clock, bus = Clock(), Bus(up={ME})
    leading: list[object] = []
    journal = RmJournal(Links(bus, Peer(ME, "h:1")), frozenset({ME}),
                        JournalStore(f"sqlite:///{path}", synchronous_runner), clock, apply, rng=random.Random(1),
                        on_leading=leading.append)  # fmt: skip
    result_of(defer.ensureDeferred(journal.start()))
    for _ in range(100):
        if leading:
            return journal
        clock.advance(0.5)
        bus.flush()
    raise AssertionError("a journal of one node did not lead")
