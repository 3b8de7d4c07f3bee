"""The ledger mirror's re-reading sweep: which mirrored entries a round re-reads, within its bounds.

A round re-reads a *run* of its copy from the sweep's cursor (``ledger_mirror``,
module doc, step 7): at most ``K`` entries and at most ``B`` payload bytes, but
always the first entry, so the cursor moves every round.  The copy is read in
pieces of at most ``B // MAX_PAYLOAD_BYTES`` rows (at least one), so holding them
never takes more than ``B`` plus one entry of memory, whatever the entries' sizes;
only the (index, leaf hash) pairs are kept.

Why any ``ceil(n / K) + ceil(2 S / B) + 2`` consecutive rounds re-read all of a copy
of ``n`` entries and ``S`` payload bytes: from wherever the cursor is, a run ends
because it has K entries (at most ``n / K`` such runs, one more for the run cut
where the window began), because the next entry would pass B (the run's bytes and
that entry's are over B, and each entry is counted in at most two such sums: fewer
than ``2 S / B + 1`` runs), or at the copy's end (one run, where the cursor wraps).
"""

from __future__ import annotations

import random

from cortex_rm.accounting import ledger_store
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.yarn.blocking import Runner

Run = list[tuple[int, bytes]]  # (index, the copy's leaf hash), contiguous


async def read_run(log: MerkleLog, run: Runner, start: int, end: int, budget: int) -> tuple[Run, int]:
    """The entries ``start``... of the copy, below ``end``, while their payloads fit ``budget`` bytes (the first
    always does when ``budget`` is positive); the run and its payload bytes."""
    taken: Run = []
    used = 0
    at = start
    while at < end and budget > 0:
        rows = max(1, min(end - at, (budget - used) // max(1, ledger_store.MAX_PAYLOAD_BYTES)))
        got = await run(lambda a=at, r=rows: log.entries(a, a + r))  # type: ignore[misc]
        if not got:
            break
        for row in got:
            if taken and used + len(row.payload) > budget:
                return taken, used
            taken.append((row.index, row.leaf_hash))
            used += len(row.payload)
        at += len(got)
    return taken, used


def sample_indices(rng: random.Random, limit: int, count: int, skip: range) -> list[int]:
    """Up to ``count`` distinct random indices below ``limit``, none in ``skip`` (the sweep's run), sorted."""
    if limit <= 0 or count <= 0:
        return []
    return sorted(i for i in rng.sample(range(limit), min(limit, count)) if i not in skip)
