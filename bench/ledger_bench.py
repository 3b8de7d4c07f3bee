"""The ledger's costs: appends/s, proof verifications/s, and the time to audit a month of a 1,000-node cluster.

The month: every node is probed by about 3 witnesses, each of which puts one
attestation per 10-minute batch into the ledger, so 1,000 x 3 x 144 x 30 =
12,960,000 entries a month, one batch of 3,000 entries and one signed tree head per
10 minutes.  The bench builds a ledger of ``--entries`` (default 1,000,000) that
way, with payloads of ``--payload`` bytes (default 200, about an attestation), and
prints:

* appends/s (whole batches through ``MerkleLog.append``, one transaction each,
  plus one signed tree head per batch), and the database's size;
* inclusion proofs: made/s (from the store) and verified/s (``verify_inclusion``),
  for random entries of the full tree;
* consistency proofs: made/s and verified/s, between random earlier sizes and the full tree;
* ``verify_all`` (every entry rehashed, every stored subtree and tree head checked,
  every head's signature verified): seconds for the built ledger, and the month
  extrapolated linearly from it (the audit reads and hashes each entry once, so it
  is linear in the entries).

Usage: .venv/bin/python bench/ledger_bench.py [--backend sqlite|postgresql|memory|journal] [--entries 1000000]
       [--batch 3000] [--proofs 20000] [--payload 200]
``postgresql`` starts a throwaway server as the contract tests do (``tests/support/postgres.py``).
``journal`` writes through the RM's journal (``ha/replicated_ledger.py``) of three eligible nodes in this one
process (``tests/support/journal_nodes.py``: SQLite journals and SQLite copies, the in-memory bus, a fake
clock): each append is committed by a majority and applied to the leader's copy before it returns, the
followers' copies as the commit reaches them.  So its appends/s count the three nodes' work on one core
(encoding, three journal files, three copies), and no network: an upper bound of the cost, not of the latency.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from cortex_rm.accounting.ledger import MerkleLog  # noqa: E402
from cortex_rm.accounting.ledger_store import LedgerEntry, LedgerStore, MemoryLedgerStore, SqlLedgerStore  # noqa: E402
from cortex_rm.accounting.merkle import verify_consistency, verify_inclusion  # noqa: E402
from cortex_rm.accounting.tree_heads import keys_by_id  # noqa: E402

MONTH_ENTRIES = 1_000 * 3 * 144 * 30  # nodes x witnesses x 10-minute batches a day x days
BATCH_MS = 10 * 60 * 1000


def build(log: MerkleLog, key: ec.EllipticCurvePrivateKey, entries: int, batch: int, size: int) -> float:
    """Append ``entries`` in batches, one signed head per batch; the seconds it took (payload making excluded)."""
    spent = 0.0
    filler = bytes(
        j * 31 & 0xFF for j in range(size - 8)
    )  # attestation-sized payloads, distinct by their first 8 bytes
    for at in range(0, entries, batch):
        rows = [LedgerEntry("attestation", i.to_bytes(8, "big") + filler) for i in range(at, min(at + batch, entries))]
        started = time.perf_counter()
        log.append(rows)
        log.sign_tree_head(key, 1_767_225_600_000 + (at // batch) * BATCH_MS)
        spent += time.perf_counter() - started
        if at // batch % 50 == 0:
            print(f"  built {at + len(rows):,} entries ({spent:.0f} s)", file=sys.stderr, flush=True)
    return spent


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "memory", "journal"), default="sqlite")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=3_000)
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--payload", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    key = ec.generate_private_key(ec.SECP256R1())
    workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    server = None
    nodes = None
    store: LedgerStore
    if args.backend == "memory":
        store = MemoryLedgerStore()
    elif args.backend == "journal":
        from tests.support.journal_nodes import Nodes

        nodes = Nodes(workdir)
        nodes.run(7)
        store = nodes.ledger_of(nodes.leader())
    elif args.backend == "sqlite":
        store = SqlLedgerStore(f"sqlite:///{workdir / 'ledger.sqlite'}")
    else:
        from tests.support.postgres import postgres_or_skip

        server = postgres_or_skip()
        store = SqlLedgerStore(server.new_database())
    try:
        log = MerkleLog(store)
        n = args.entries
        print(
            f"ledger bench: {args.backend}, {n:,} entries of {args.payload} B in batches of {args.batch:,}, load {os.getloadavg()[0]:.1f}"
        )
        seconds = build(log, key, n, args.batch, args.payload)
        heads = len(log.tree_heads())
        print(f"appends:            {rate(n, seconds)} ({n:,} entries and {heads:,} signed heads in {seconds:.1f} s)")
        if nodes is not None:
            nodes.run(2)
            roots = {MerkleLog(copies.ledger.store).root_hash() for copies in nodes.copies.values()}
            assert roots == {log.root_hash()}, "a copy differs"
            journal = [e for e in nodes.journals[nodes.leader()].node.state.log if e.data]  # type: ignore[union-attr]
            print(f"journal:            {len(journal):,} entries, {sum(len(e.data) for e in journal) / 2**20:,.0f} MiB"
                  f" (every copy has the same root)")
        if args.backend == "sqlite":
            print(f"database size:      {(workdir / 'ledger.sqlite').stat().st_size / 2**20:,.0f} MiB")
        root = log.root_hash()

        indices = [rng.randrange(n) for _ in range(args.proofs)]
        leaves = {row.index: row.leaf_hash for i in indices for row in log.entries(i, i + 1)}
        started = time.perf_counter()
        paths = [log.inclusion_proof(i) for i in indices]
        made = time.perf_counter() - started
        started = time.perf_counter()
        good = sum(verify_inclusion(i, n, leaves[i], p, root) for i, p in zip(indices, paths))
        checked = time.perf_counter() - started
        assert good == len(indices)
        print(
            f"inclusion proofs:   made {rate(len(paths), made)}, verified {rate(good, checked)} ({len(paths[0])} hashes each)"
        )

        olds = [rng.randrange(1, n) for _ in range(args.proofs)]
        old_roots = {size: log.root_hash(size) for size in olds}
        started = time.perf_counter()
        proofs = [log.consistency_proof(size) for size in olds]
        made = time.perf_counter() - started
        started = time.perf_counter()
        good = sum(verify_consistency(size, n, old_roots[size], root, p) for size, p in zip(olds, proofs))
        checked = time.perf_counter() - started
        assert good == len(olds)
        print(f"consistency proofs: made {rate(len(proofs), made)}, verified {rate(good, checked)}")

        started = time.perf_counter()
        audit = log.verify_all(keys_by_id([key.public_key()]))
        audited = time.perf_counter() - started
        assert audit.ok, audit.problems
        month = audited * MONTH_ENTRIES / n
        print(
            f"verify_all:         {audited:.1f} s for {n:,} entries and {audit.tree_heads_checked:,} heads "
            f"({rate(n, audited)}); a month of 1,000 nodes ({MONTH_ENTRIES:,} entries) extrapolated: "
            f"{month:.0f} s ({month / 60:.1f} min)"
        )
        print(f"load at end {os.getloadavg()[0]:.1f}")
    finally:
        store.close()
        if server is not None:
            server.stop()
        if nodes is not None:
            for i in list(nodes.journals):
                nodes.kill(i)
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
