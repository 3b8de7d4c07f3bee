"""A mirror of the RM's ledger: a copy checked against every signed tree head, and a watch for forks and rewrites.

Each round (``sync_round``, every ``mirror_interval_s`` in the daemon) the mirror:

1. reads the RM's latest signed tree head (STH) from a ``LogSource``, and when it
   knows the head's signer key already, checks the signature before anything else;
2. a validly signed head *smaller* than its copy is a rolled-back log: reported as
   a ``rolled-back`` finding with both signed heads (conclusive when one key signed
   the smaller tree later than the larger one), and the round fails;
3. fetches the entries it lacks, in pages (the RM may serve fewer than asked; an
   empty page ends the fetch), up to bounds per round, and checks they are a
   prefix of that head's tree: the root of its copy with them appended
   (``MerkleLog.root_with``) must be the head's root, or, when the round stops
   short, verify against it with the RM's consistency proof (RFC 9162 2.1.4);
4. checks the head's signature with a resource manager's key: the signer key of
   the ledger's membership entries whose SHA-256 SPKI is the head's key id, and
   whose ring id is in ``[ring] resource_managers`` (with that list empty, the key
   of the log's first membership entry: trust on first use, as
   ``ledger_reading.signer_keys``).  Keys are learnt only from entries that hash
   into the head (step 3), and kept only once those entries are appended (step 6);
5. checks the head's consistency with the last head it accepted
   (``TreeHeadWatcher``: a head that no proof reconciles is a fork);
6. only then appends the entries (``append(..., expected_root=...)``) and keeps the
   head (``add_tree_head``);
7. re-reads already mirrored entries from the RM (``_recheck``) and compares their
   leaf hashes with its copy: an entry the RM serves differently now is a
   rewritten log.  This is what catches a row edited in the RM's database: the
   RM's stored subtree hashes, and so its heads and proofs, still agree with the
   old entry.  The re-read is a *sweep*: a cursor walks the copy, each round
   re-reading the next run of entries from it (at most ``sweep_entries`` = K, and
   at most ``sweep_bytes`` = B of payload, but always one), wrapping to entry 0
   at the end, plus ``recheck_samples`` random entries.  The guarantee: every
   entry of a copy of ``n`` entries and ``S`` payload bytes is re-read at least
   once in any ``ceil(n / K) + ceil(2 S / B) + 2`` successful rounds (entries of
   at most B / K bytes: ``ceil(n / K) + 2``; ``mirror_sweep`` says why), so an
   edited row is found within that many rounds, whatever the log's size.  A round's re-reading work is bounded by K + the
   samples entries, and about B + one entry of payload read from each side;
8. checks the heads other mirrors gossiped (``offer_peer_head``; only heads signed
   by a key it trusts are kept, one per publisher, the least recently updated
   evicted when ``MAX_PEER_HEADS`` are) against its copy: one of a size it holds
   must have its root at that size (the same size and another root, both signed:
   a conclusive fork); a larger one must be reachable by a consistency proof the
   RM gives.

What it finds goes into ``findings`` (``mirror_findings.py``), each new one logged
at error level with its evidence.  The mirror never appends anything it could
not check, so its copy only ever holds entries the RM signed for.

Blocking work (the mirror's own database) runs through ``run``; the clock stamps
findings and drives the rounds (``start``), so tests run on ``task.Clock``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import LedgerError
from cortex_rm.accounting.ledger_reading import signer_keys
from cortex_rm.accounting.ledger_store import LedgerEntry
from cortex_rm.accounting.merkle import verify_consistency
from cortex_rm.accounting.mirror_findings import (
    FORK,
    INCONSISTENT,
    REWRITTEN,
    ROLLED_BACK,
    Finding,
    MirrorFindings,
    head_json,
)
from cortex_rm.accounting.mirror_keys import MirrorKeys
from cortex_rm.accounting.mirror_sweep import read_run, sample_indices
from cortex_rm.accounting.tree_heads import (
    ForkEvidence,
    SignedTreeHead,
    TreeHeadWatcher,
    Verdict,
    signature_error,
)
from cortex_rm.yarn.blocking import Runner

log = Logger()

MAX_PEER_HEADS = 1024  # gossiped heads kept (one per publisher): remote input, so bounded


class LogSource(Protocol):
    """The RM's ledger as a mirror reads it (its REST API in the daemon; an in-process log in tests)."""

    def tree_head(self) -> defer.Deferred[SignedTreeHead]:
        """The latest signed tree head."""

    def entries(self, start: int, end: int) -> defer.Deferred[list[LedgerEntry]]:
        """Entries ``start``, ``start + 1``... (at most ``end - start``; fewer when the log is shorter)."""

    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
        """The proof that the tree of ``first`` entries is a prefix of the one of ``second``."""


class MirrorRoundError(LedgerError):
    """A round could not finish (the RM unreachable, a head not signed by a resource manager...): it is retried."""


@dataclass(frozen=True)
class MirrorSettings:
    """How much one round fetches and re-reads (module doc, steps 3 and 7)."""

    chunk_entries: int = 256  # entries asked per request (the RM serves at most 1000, fewer past its page's bytes)
    max_entries_per_round: int = 20_000  # a mirror far behind catches up over several rounds
    max_bytes_per_round: int = 16 * 1024 * 1024  # payload bytes held in memory before they are checked
    sweep_entries: int = 256  # K: entries the sweep re-reads per round
    sweep_bytes: int = 16 * 1024 * 1024  # B: payload bytes the sweep re-reads per round (at least one entry)
    recheck_samples: int = 4  # random entries re-read besides the sweep's run (within B)


class LedgerMirror:
    """The mirror's copy of the ledger and what it found (module doc)."""

    def __init__(
        self,
        log: MerkleLog,
        run: Runner,
        clock: IReactorTime,
        resource_managers: frozenset[int],
        rng: random.Random,
        settings: MirrorSettings = MirrorSettings(),
    ) -> None:
        self.log, self.run, self.clock, self.rng, self.settings = log, run, clock, rng, settings
        self.resource_managers = resource_managers
        self.size = 0  # entries in the copy (every one checked against a signed head)
        self.head: SignedTreeHead | None = None  # the largest head the copy holds whole
        self.findings = MirrorFindings()
        self.rounds = 0
        self.failed_rounds = 0
        self.entries_fetched = 0
        self.entries_rechecked = 0
        self.sweep_cursor = 0  # the next entry the sweep re-reads (module doc, step 7)
        self.sweeps = 0  # sweeps completed (the cursor wrapped)
        self.last_round_ms: int | None = None
        self.last_error: str | None = None
        self.peer_heads: dict[int, tuple[SignedTreeHead, bool]] = {}  # publisher -> (head, checked); oldest first
        self.keys = MirrorKeys(resource_managers)  # the resource managers' keys (trusted, and this round's pending)
        self.watcher = TreeHeadWatcher(self.keys.key)
        self._loop: task.LoopingCall | None = None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def head_error(self, sth: SignedTreeHead) -> str | None:
        """Why ``sth`` is not signed by a key the mirror trusts now (None: it is)."""
        return signature_error(sth, self.keys.trusted_key)

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Read the copy's size, its last head and the keys its membership entries name."""

        def load() -> tuple[int, SignedTreeHead | None, set[bytes]]:
            return self.log.size(), self.log.latest_tree_head(), signer_keys(self.log, self.resource_managers)

        self.size, self.head, keys = await self.run(load)
        self.keys.load(keys)
        self.watcher.latest = self.head

    def start(self, source: Callable[[], defer.Deferred[LogSource]], interval_s: float) -> None:
        """Run a round now and every ``interval_s`` with the source ``source()`` gives (found anew each time)."""
        self._loop = task.LoopingCall(lambda: defer.ensureDeferred(self._round(source)))
        self._loop.clock = self.clock
        self._loop.start(interval_s, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def _round(self, source: Callable[[], defer.Deferred[LogSource]]) -> None:
        try:
            await self.sync_round(await source())
        except Exception as e:  # the RM unreachable, a bad answer: the next round retries
            self.failed_rounds += 1
            text = f"{type(e).__name__}: {e}"[:500]
            if text != self.last_error:
                log.warn("ledger mirror: a round failed ({error}); retrying every round", error=text)
            self.last_error = text
            return
        self.last_error = None

    # ------------------------------------------------------------ one round

    async def sync_round(self, source: LogSource) -> None:
        """Steps 1-8 of the module doc (``MirrorRoundError`` when the RM's answers cannot be used)."""
        sth = await source.tree_head()
        if sth.key_id in self.keys.trusted:  # a known signer: its signature first, before any entry is fetched
            error = self.head_error(sth)
            if error is not None:
                raise MirrorRoundError(f"the RM's head is not signed by a resource manager: {error}")
        if sth.size < self.size:
            await self._rolled_back(source, sth)
        fresh = await self._fetch(source, sth)
        candidate = await self.run(lambda: self.log.root_with(fresh))
        end = self.size + len(fresh)
        if end == sth.size:
            matches = candidate == sth.root_hash
        else:
            proof = await source.consistency_proof(end, sth.size)
            matches = verify_consistency(end, sth.size, candidate, sth.root_hash, proof)
        try:
            if matches:  # step 4: keys only from entries that hash into the head, trusted once appended
                self.keys.learn(fresh)
            if not await self._take(source, sth, fresh, candidate, end, matches):
                return
            self.keys.commit()
        finally:
            self.keys.discard()
        await self._recheck(source, self.size)
        await self._check_peer_heads(source)
        self.rounds += 1
        self.last_round_ms = self.now_ms()

    async def _take(
        self, source: LogSource, sth: SignedTreeHead, fresh: list[LedgerEntry], candidate: bytes, end: int, matches: bool
    ) -> bool:
        """Steps 4-6: append ``fresh`` under ``sth`` if it is signed, consistent and hashes to it; whether it did
        (a fork or entries that do not hash to the head are findings; a head not signed by a key we trust raises)."""
        error = signature_error(sth, self.keys.key)
        if error is not None:
            raise MirrorRoundError(f"the RM's head is not signed by a resource manager: {error}")
        last = self.watcher.latest
        observed = self.watcher.observe(sth, await self._proof_between(source, last, sth))
        if observed.verdict is Verdict.FORK:
            assert observed.evidence is not None
            self._found(Finding(FORK, "the RM signed heads no consistency proof reconciles", self.now_ms(), self.head, observed.evidence))
            return False
        if not matches:
            reason = f"entries {self.size}..{end - 1} the RM serves do not hash into its signed {sth.describe()}"
            self._found(Finding(INCONSISTENT, reason, self.now_ms(), sth))
            return False
        if fresh:
            await self.run(lambda: self.log.append(fresh, expected_root=candidate))
            self.size = end
            self.entries_fetched += len(fresh)
        if end == sth.size:
            await self.run(lambda: self.log.add_tree_head(sth))
            if self.head is None or sth.size >= self.head.size:
                self.head = sth
        return True

    async def _rolled_back(self, source: LogSource, sth: SignedTreeHead) -> None:
        """Step 2: ``sth`` is smaller than the copy; report it (when it is validly signed) and fail the round."""
        error = self.head_error(sth)
        if error is not None:
            raise MirrorRoundError(f"the RM serves a head smaller than the mirrored log, not signed by a resource manager: {error}")
        reason = f"the RM signed {sth.describe()}, smaller than the {self.size} entries it served under its signed heads before"
        held = [h for h in (self.head, self.watcher.latest) if h is not None and h.size > sth.size]
        ours = max(held, key=lambda h: (h.size, h.timestamp_ms)) if held else None
        evidence = None
        if ours is not None:  # earlier and later in signing time: the larger tree, then the smaller
            conclusive = ours.key_id == sth.key_id and sth.timestamp_ms > ours.timestamp_ms
            evidence = ForkEvidence(ours, sth, (), reason, conclusive)
        self._found(Finding(ROLLED_BACK, reason, self.now_ms(), ours, evidence))
        fork = await self._check_other_head(sth, source, "the RM's smaller head disagrees with the mirrored log")
        if fork is not None:
            raise MirrorRoundError(fork)
        await self._recheck(source, sth.size)
        raise MirrorRoundError(f"the RM serves {sth.describe()}, older than the {self.size} entries mirrored (rolled back)")

    async def _fetch(self, source: LogSource, sth: SignedTreeHead) -> list[LedgerEntry]:
        """The entries after the copy, up to the head's size and this round's bounds.

        The RM may serve fewer entries than asked (it bounds a page by bytes): the next
        request starts after them.  An empty page ends the fetch; the round then checks
        what it got against the head with a consistency proof (nothing at all: it fails).
        """
        fresh: list[LedgerEntry] = []
        held = 0
        at = self.size
        s = self.settings
        stop = min(sth.size, self.size + s.max_entries_per_round)
        while at < stop and held < s.max_bytes_per_round:
            want = min(stop, at + s.chunk_entries) - at
            got = (await source.entries(at, at + want))[:want]
            if not got:
                if not fresh:
                    raise MirrorRoundError(f"the RM served no entry {at}, below its head's size {sth.size}")
                break
            fresh.extend(got)
            held += sum(len(e.payload) for e in got)
            at += len(got)
        return fresh

    async def _proof_between(self, source: LogSource, last: SignedTreeHead | None, sth: SignedTreeHead) -> list[bytes]:
        if last is None or last.size == sth.size:
            return []
        return await source.consistency_proof(min(last.size, sth.size), max(last.size, sth.size))

    # ------------------------------------------------------------ re-reading

    async def _recheck(self, source: LogSource, limit: int) -> None:
        """Step 7: re-read the sweep's next run below ``limit`` and a few random entries; compare leaf hashes."""
        limit = min(limit, self.size)
        if limit <= 0:
            return
        s = self.settings
        if self.sweep_cursor >= limit:
            self.sweep_cursor = 0
        start = self.sweep_cursor
        run, used = await read_run(self.log, self.run, start, min(limit, start + s.sweep_entries), s.sweep_bytes)
        done = await self._compare(source, run, s.sweep_bytes)
        self.sweep_cursor = start + done
        if self.sweep_cursor >= limit:
            self.sweep_cursor = 0
            self.sweeps += 1
        for index in sample_indices(self.rng, limit, s.recheck_samples, range(start, start + len(run))):
            sample, size = await read_run(self.log, self.run, index, index + 1, s.sweep_bytes - used)
            if not sample or used + size > s.sweep_bytes:
                break
            used += size
            await self._compare(source, sample, s.sweep_bytes)

    async def _compare(self, source: LogSource, run: list[tuple[int, bytes]], budget: int) -> int:
        """Re-read the entries of ``run`` (index, mirrored leaf hash) from the RM, page by page; how many were
        compared (fewer when the RM stops serving them or serves more than twice ``budget`` bytes)."""
        if not run:
            return 0
        start, end = run[0][0], run[-1][0] + 1
        at, served_bytes = start, 0
        while at < end and served_bytes <= 2 * budget:
            page = (await source.entries(at, end))[: end - at]
            if not page:
                self._rewritten(at, run[at - start][1], b"")  # below the head's size, and no longer served
                at += 1  # the sweep moves past it (it is reported again when the sweep comes back)
                break
            for offset, entry in enumerate(page):
                index, mirrored = run[at - start + offset]
                if entry.leaf_hash() != mirrored:
                    self._rewritten(index, mirrored, entry.leaf_hash())
            served_bytes += sum(len(e.payload) for e in page)
            at += len(page)
        self.entries_rechecked += at - start
        return at - start

    def _rewritten(self, index: int, mirrored: bytes, served: bytes) -> None:
        reason = (
            "the RM serves this mirrored entry with other bytes: its log was rewritten"
            if served
            else "the RM no longer serves this mirrored entry"
        )
        self._found(Finding(REWRITTEN, reason, self.now_ms(), self.head, None, index, mirrored, served))

    # ------------------------------------------------------------ other mirrors' heads

    def offer_peer_head(self, publisher: int, sth: SignedTreeHead) -> bool:
        """A head another mirror gossiped (checked next round); whether it is new (to be passed on).

        Only a head signed by a key the mirror trusts is kept (others leave no state);
        with ``MAX_PEER_HEADS`` publishers kept, the least recently updated one makes room."""
        known = self.peer_heads.get(publisher)
        if known is not None and known[0] == sth:
            return False
        if self.head_error(sth) is not None:
            return False
        self.peer_heads.pop(publisher, None)
        while len(self.peer_heads) >= MAX_PEER_HEADS:
            del self.peer_heads[next(iter(self.peer_heads))]
        self.peer_heads[publisher] = (sth, False)
        return True

    def forget_peer(self, publisher: int) -> None:
        """Drop the head of a publisher that is no longer a ring member."""
        self.peer_heads.pop(publisher, None)

    async def _check_peer_heads(self, source: LogSource) -> None:
        for publisher, (sth, checked) in list(self.peer_heads.items()):
            if checked:
                continue
            error = await self._check_other_head(sth, source, f"a head gossiped by {publisher:040x} disagrees with the mirrored log")
            if publisher in self.peer_heads and self.peer_heads[publisher][0] == sth:
                self.peer_heads[publisher] = (sth, True)
            if error is not None:
                log.info("ledger mirror: ignoring a head gossiped by {publisher}: {error}", publisher=f"{publisher:040x}"[:10], error=error)

    async def _check_other_head(self, sth: SignedTreeHead, source: LogSource, reason: str) -> str | None:
        """Check a head against the copy (module doc, step 7); why it could not be checked (None: it was)."""
        error = self.head_error(sth)
        if error is not None:
            return error
        head = self.head
        if sth.size <= self.size:
            own = await self.run(lambda: self.log.root_hash(sth.size))
            if own == sth.root_hash:
                return None
            if head is not None and head.size >= sth.size:
                proof = await self.run(lambda: self.log.consistency_proof(sth.size, head.size))
                evidence = ForkEvidence(sth, head, tuple(proof), reason, sth.size == head.size)
                self._found(Finding(FORK, reason, self.now_ms(), head, evidence))
            else:
                self._found(Finding(FORK, f"{reason}: {sth.describe()} vs our root {own.hex()[:16]}", self.now_ms(), head))
            return None
        if head is None:
            return "the mirror holds no head yet"
        proof = await source.consistency_proof(head.size, sth.size)
        if not verify_consistency(head.size, sth.size, head.root_hash, sth.root_hash, proof):
            text = f"the RM gives no valid consistency proof from size {head.size} to {sth.size}"
            evidence = ForkEvidence(head, sth, tuple(proof), text, False)
            self._found(Finding(FORK, f"{reason}: {text}", self.now_ms(), head, evidence))
        return None

    # ------------------------------------------------------------ reporting

    def _found(self, finding: Finding) -> None:
        if self.findings.add(finding):
            log.error(
                "LEDGER FORK DETECTED by this mirror ({count} so far): {finding}; evidence: {evidence}",
                count=self.findings.count, finding=finding.describe(), evidence=finding.to_json(),
            )  # fmt: skip

    def status_json(self) -> dict[str, Any]:
        """The mirror's REST document (``yarn_api/mirror_rest.py`` describes it)."""
        return {
            "ledgerMirror": {
                "size": self.size,
                "treeHead": head_json(self.head),
                "latestRmHead": head_json(self.watcher.latest),
                "rounds": self.rounds,
                "failedRounds": self.failed_rounds,
                "lastRoundMs": self.last_round_ms,
                "lastError": self.last_error,
                "entriesFetched": self.entries_fetched,
                "entriesRechecked": self.entries_rechecked,
                "sweepCursor": self.sweep_cursor,
                "sweeps": self.sweeps,
                "peerHeads": len(self.peer_heads),
                "forksDetected": self.findings.count,
                "forks": [f.to_json() for f in self.findings.kept],
                "moreForks": self.findings.more,
            }
        }
