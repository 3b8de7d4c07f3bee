"""A mirror of the RM's ledger: a copy checked against every signed tree head, and a watch for forks and rewrites.

Each round (``sync_round``, every ``mirror_interval_s`` in the daemon) the mirror:

1. reads the RM's latest signed tree head (STH) from a ``LogSource``;
2. fetches the entries it lacks, in chunks, up to a bound per round, and checks
   they are a prefix of that head's tree: the root of its copy with them appended
   (``MerkleLog.root_with``) must be the head's root, or, when the round stops
   short, verify against it with the RM's consistency proof (RFC 9162 2.1.4);
3. checks the head's signature with a resource manager's key: the signer key of
   the ledger's membership entries whose SHA-256 SPKI is the head's key id, and
   whose ring id is in ``[ring] resource_managers`` (with that list empty, the key
   of the log's first membership entry: trust on first use, as
   ``ledger_reading.signer_keys``);
4. checks the head's consistency with the last head it accepted
   (``TreeHeadWatcher``: a head that no proof reconciles is a fork);
5. only then appends the entries (``append(..., expected_root=...)``) and keeps the
   head (``add_tree_head``);
6. re-reads already mirrored entries from the RM (all of them while the log is
   small, a random sample after) and compares their leaf hashes with its copy: an
   entry the RM serves differently now is a rewritten log.  This is what catches a
   row edited in the RM's database: the RM's stored subtree hashes, and so its
   heads and proofs, still agree with the old entry;
7. checks the heads other mirrors gossiped (``offer_peer_head``) against its copy:
   one of a size it holds must have its root at that size (the same size and
   another root, both signed: a conclusive fork); a larger one must be reachable by
   a consistency proof the RM gives.

What it finds goes into ``findings`` (``mirror_findings.py``), each new one logged
at error level with its evidence.  The mirror never appends anything it could
not check, so its copy only ever holds entries the RM signed for.

Blocking work (the mirror's own database) runs through ``run``; the clock stamps
findings and drives the rounds (``start``), so tests run on ``task.Clock``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cortex_rm.accounting.attestations import key_identity
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import LedgerError
from cortex_rm.accounting.ledger_reading import MEMBERSHIP, signer_keys
from cortex_rm.accounting.ledger_store import LedgerEntry
from cortex_rm.accounting.membership_log import MalformedMembership, decode_membership, membership_error
from cortex_rm.accounting.merkle import verify_consistency
from cortex_rm.accounting.mirror_findings import FORK, INCONSISTENT, REWRITTEN, Finding, MirrorFindings, head_json
from cortex_rm.accounting.tree_heads import (
    ForkEvidence,
    SignedTreeHead,
    TreeHeadWatcher,
    Verdict,
    key_id_of,
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
    """How much one round fetches and re-reads."""

    chunk_entries: int = 256  # entries per request (the RM serves at most 1000)
    max_entries_per_round: int = 20_000  # a mirror far behind catches up over several rounds
    max_bytes_per_round: int = 16 * 1024 * 1024  # payload bytes held in memory before they are checked
    recheck_all_below: int = 64  # a log this small is re-read whole every round
    recheck_samples: int = 16  # else this many random entries are


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
        self.last_round_ms: int | None = None
        self.last_error: str | None = None
        self.peer_heads: dict[int, tuple[SignedTreeHead, bool]] = {}  # publisher -> (head, checked)
        self._keys: dict[bytes, ec.EllipticCurvePublicKey] = {}  # key id -> a resource manager's key
        self._first_signer: bytes | None = None  # with no resource_managers listed: the trusted key
        self.watcher = TreeHeadWatcher(self._keys.get)
        self._loop: task.LoopingCall | None = None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Read the copy's size, its last head and the keys its membership entries name."""

        def load() -> tuple[int, SignedTreeHead | None, set[bytes]]:
            return self.log.size(), self.log.latest_tree_head(), signer_keys(self.log, self.resource_managers)

        self.size, self.head, keys = await self.run(load)
        for key in keys:
            self._trust(key)
        if not self.resource_managers and keys:
            self._first_signer = next(iter(keys))
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
        """Steps 1-7 of the module doc (``MirrorRoundError`` when the RM's answers cannot be used)."""
        sth = await source.tree_head()
        if sth.size < self.size:
            error = await self._check_other_head(sth, source, "the RM now serves a head smaller than the log it served before")
            if error is not None:
                raise MirrorRoundError(error)
            await self._recheck(source, sth.size)
            raise MirrorRoundError(f"the RM serves {sth.describe()}, older than the {self.size} entries mirrored (rolled back?)")
        fresh = await self._fetch(source, sth)
        candidate = await self.run(lambda: self.log.root_with(fresh))
        end = self.size + len(fresh)
        if end == sth.size:
            matches = candidate == sth.root_hash
        else:
            proof = await source.consistency_proof(end, sth.size)
            matches = verify_consistency(end, sth.size, candidate, sth.root_hash, proof)
        self._learn(fresh)
        error = signature_error(sth, self._keys.get)
        if error is not None:
            raise MirrorRoundError(f"the RM's head is not signed by a resource manager: {error}")
        last = self.watcher.latest
        observed = self.watcher.observe(sth, await self._proof_between(source, last, sth))
        if observed.verdict is Verdict.FORK:
            assert observed.evidence is not None
            self._found(Finding(FORK, "the RM signed heads no consistency proof reconciles", self.now_ms(), self.head, observed.evidence))
            return
        if not matches:
            reason = f"entries {self.size}..{end - 1} the RM serves do not hash into its signed {sth.describe()}"
            self._found(Finding(INCONSISTENT, reason, self.now_ms(), sth))
            return
        if fresh:
            await self.run(lambda: self.log.append(fresh, expected_root=candidate))
            self.size = end
            self.entries_fetched += len(fresh)
        if end == sth.size:
            await self.run(lambda: self.log.add_tree_head(sth))
            if self.head is None or sth.size >= self.head.size:
                self.head = sth
        await self._recheck(source, self.size)
        await self._check_peer_heads(source)
        self.rounds += 1
        self.last_round_ms = self.now_ms()

    async def _fetch(self, source: LogSource, sth: SignedTreeHead) -> list[LedgerEntry]:
        """The entries after the copy, up to the head's size and this round's bounds."""
        fresh: list[LedgerEntry] = []
        held = 0
        at = self.size
        s = self.settings
        stop = min(sth.size, self.size + s.max_entries_per_round)
        while at < stop and held < s.max_bytes_per_round:
            want = min(stop, at + s.chunk_entries) - at
            got = (await source.entries(at, at + want))[:want]
            if not got:
                raise MirrorRoundError(f"the RM served no entry {at}, below its head's size {sth.size}")
            fresh.extend(got)
            held += sum(len(e.payload) for e in got)
            at += len(got)
        return fresh

    async def _proof_between(self, source: LogSource, last: SignedTreeHead | None, sth: SignedTreeHead) -> list[bytes]:
        if last is None or last.size == sth.size:
            return []
        return await source.consistency_proof(min(last.size, sth.size), max(last.size, sth.size))

    def _learn(self, entries: Sequence[LedgerEntry]) -> None:
        """Trust the signer keys of membership entries that the policy (module doc, step 3) allows."""
        for entry in entries:
            if entry.kind != MEMBERSHIP:
                continue
            try:
                change = decode_membership(entry.payload)
            except MalformedMembership:
                continue
            if membership_error(change) is not None:
                continue
            key = change.signer_key
            if self.resource_managers:
                if change.signer in self.resource_managers:
                    self._trust(key)
            elif self._first_signer is None:
                self._first_signer = key
                self._trust(key)

    def _trust(self, key: bytes) -> None:
        try:
            public_key = key_identity(key)[0]
        except ValueError:
            return
        self._keys[key_id_of(public_key)] = public_key

    # ------------------------------------------------------------ re-reading

    def _recheck_ranges(self, limit: int) -> list[tuple[int, int]]:
        s = self.settings
        if limit <= 0:
            return []
        if limit <= s.recheck_all_below:
            return [(start, min(limit, start + s.chunk_entries)) for start in range(0, limit, s.chunk_entries)]
        return [(i, i + 1) for i in sorted(self.rng.sample(range(limit), min(limit, s.recheck_samples)))]

    async def _recheck(self, source: LogSource, limit: int) -> None:
        """Step 6: re-read entries below ``limit`` and compare their leaf hashes with the copy's."""
        for start, end in self._recheck_ranges(min(limit, self.size)):
            served = (await source.entries(start, end))[: end - start]
            mirrored = await self.run(lambda s=start, e=end: self.log.entries(s, e))  # type: ignore[misc]
            self.entries_rechecked += len(served)
            for row in mirrored:
                at = row.index - start
                leaf = served[at].leaf_hash() if at < len(served) else b""
                if leaf == row.leaf_hash:
                    continue
                reason = (
                    "the RM serves this mirrored entry with other bytes: its log was rewritten"
                    if leaf
                    else "the RM no longer serves this mirrored entry"
                )
                self._found(Finding(REWRITTEN, reason, self.now_ms(), self.head, None, row.index, row.leaf_hash, leaf))

    # ------------------------------------------------------------ other mirrors' heads

    def offer_peer_head(self, publisher: int, sth: SignedTreeHead) -> bool:
        """A head another mirror gossiped (checked next round); whether it is new (to be passed on)."""
        known = self.peer_heads.get(publisher)
        if known is not None and known[0] == sth:
            return False
        if known is None and len(self.peer_heads) >= MAX_PEER_HEADS:
            return False
        self.peer_heads[publisher] = (sth, False)
        return True

    async def _check_peer_heads(self, source: LogSource) -> None:
        for publisher, (sth, checked) in list(self.peer_heads.items()):
            if checked:
                continue
            error = await self._check_other_head(sth, source, f"a head gossiped by {publisher:040x} disagrees with the mirrored log")
            if self.peer_heads.get(publisher, (None,))[0] == sth:
                self.peer_heads[publisher] = (sth, True)
            if error is not None:
                log.info("ledger mirror: ignoring a head gossiped by {publisher}: {error}", publisher=f"{publisher:040x}"[:10], error=error)

    async def _check_other_head(self, sth: SignedTreeHead, source: LogSource, reason: str) -> str | None:
        """Check a head against the copy (module doc, step 7); why it could not be checked (None: it was)."""
        error = signature_error(sth, self._keys.get)
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
                "peerHeads": len(self.peer_heads),
                "forksDetected": self.findings.count,
                "forks": [f.to_json() for f in self.findings.kept],
                "moreForks": self.findings.more,
            }
        }
