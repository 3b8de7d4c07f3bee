"""What a ring member needs before it exists: this start's incarnation, and its key's proof of work.

**Incarnation.**  Each start takes ``max(persisted + 1, wall-clock milliseconds)``
and persists it in ``state_dir/ring-incarnation`` before the member exists, so a
restarted node always comes back above what the others remember of it (its
ALIVE then supersedes their DEAD or LEFT for the old incarnation).

**Proof of work.**  The key's work (``dht/ring_work.py``) is read from
``state_dir/identity/ring-work.json`` or, on a key's first start, solved through
``run_blocking`` (a thread: ~2 s at 22 bits) and logged
(``internal/ring_work_store.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger

from cortex_rm.internal.ring_work_store import solve_and_store_work, stored_work
from cortex_rm.yarn.blocking import Runner

log = Logger()

INCARNATION_FILE = "ring-incarnation"


def next_incarnation(state_dir: Path, wall_clock: Callable[[], float]) -> int:
    """This start's incarnation: above the last one persisted in ``state_dir``, and persisted before use."""
    path = state_dir / INCARNATION_FILE
    previous = 0
    try:
        previous = int(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warn("ignoring {path} ({error}); the incarnation comes from the clock", path=str(path), error=str(e))
    incarnation = max(previous + 1, int(wall_clock() * 1000))
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{incarnation}\n")
    os.replace(temporary, path)
    return incarnation


def proof_of_work(run_blocking: Runner, state_dir: Path, spki: bytes, bits: int, me: str) -> defer.Deferred[int]:
    """The key's work at ``bits``: read off the reactor, or solved once in a thread and stored (``me``: us, for the log)."""
    stored: defer.Deferred[int | None] = run_blocking(lambda: stored_work(state_dir, spki, bits))

    def solve(nonce: int | None) -> int | defer.Deferred[int]:
        if nonce is not None:
            return nonce
        log.info("ring {me}: solving the proof of work for this key ({bits} bits: ~{tries} hashes, ~{seconds:.2g} s at "
                 "2 M/s) in a thread; the ring member starts when it is solved (once per key)",
                 me=me, bits=bits, tries=2**bits, seconds=2**bits / 2e6)  # fmt: skip
        return run_blocking(lambda: solve_and_store_work(state_dir, spki, bits))

    return stored.addCallback(solve)
