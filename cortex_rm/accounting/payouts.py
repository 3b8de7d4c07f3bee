"""The payout rules: which attestations count, each node's uptime in a period, and its share.

``UptimeTally`` reads ledger entries in log order (opaque bytes; only attestation
batches concern it) and applies these rules to each attestation ``(W, S, [a, b), q)``:

1. **Signed by its witness.**  The batch must decode (``attestations.py``) and its
   signature verify with the key in it, whose SHA-1 is ``W``: otherwise the whole
   entry is refused (``MALFORMED``, ``BAD_SIGNATURE``).  A forged attestation names
   the witness it pretends to come from only by carrying that witness's key, and
   then cannot sign.
2. **Nobody attests itself**: ``W == S`` is refused (``SELF_ATTESTATION``).
3. **Each claim once.**  ``q`` must not have been read before for ``(W, S)``;
   otherwise the attestation is a replay and refused (``REPLAY``).  Batches that
   reach the log out of order (a witness's retry after the RM changed) still
   count: rule 5 keeps any instant from being paid twice.
4. **Only a ring neighbour's word.**  ``[a, b)`` is clipped to the period and to the
   instants at which ``W`` probed ``S`` according to the ``NeighbourHistory``; if
   nothing is left the attestation is refused (``NOT_NEIGHBOUR``, or
   ``OUTSIDE_PERIOD`` when it lies outside the period altogether).
5. **Overlaps credit only the new part.**  What is left joins the union of ``W``'s
   accepted instants for ``S``; an attestation that adds nothing is counted as
   ``OVERLAP`` (not an error: a retransmitted batch, or a witness that re-attests).
   An overlap can never count twice, because a witness counts once per instant.

Then **a node's uptime** in the period is the union of the instants ``t`` at which
at least ``min(min_witnesses, probers(t))`` distinct witnesses attested it, where
``probers(t)`` is the number of ring neighbours probing it at ``t`` (again from
the ``NeighbourHistory``).  This is how a lone colluding witness earns nothing
while a node with a single honest witness still gets paid: the count required at
``t`` is set by the *ring* (how many members were placed to probe the subject),
not by how many chose to attest.  In a ring of ``n >= 3`` members every live
member has at least two probers (its predecessor's successor list and its
successor), so a single witness -- a lone colluder placed next to its friend by
grinding keys, say -- never suffices; a member of a two-member ring has one
prober, and that one suffices.  ``min_witnesses`` colluding witnesses that are all
ring neighbours of the subject at once *can* attest time it was down: the
tolerance is ``min_witnesses - 1`` colluders per subject.

What a lone colluding prober can still do is lend its count where exactly
``min_witnesses - 1`` honest probers attested: at the edges of its friend's
sessions, between the first and the second honest prober's first ack (and the
same at the end) -- instants at which the friend *was* up, a few seconds a
session (``bench/payout_sim.py``: 3.4 to 3.6 s a session).
No rule that counts witnesses can tell that colluder from an honest prober that
happened to probe first; what it never gets is an instant the friend was down.

Each node's **share** is its uptime over the sum of all nodes' uptimes.
``statement`` makes the ``PayoutStatement`` (``payout_statement.py``) that the RM
signs and appends; anyone holding the same log prefix and membership history
gets the same figures.  Feed a tally every entry from (at least) the first one
appended in the period up to the closing position: witnesses attest the past,
so an entry appended before the period holds no instant of it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from cortex_rm.accounting.attestations import (
    KIND_ATTESTATIONS,
    MalformedAttestations,
    SignedAttestations,
    decode_attestations,
    signature_error,
)
from cortex_rm.accounting.intervals import Interval, IntervalUnion, clipped, quorum_coverage, total
from cortex_rm.accounting.neighbour_history import NeighbourHistory
from cortex_rm.accounting.payout_statement import PayoutStatement
from cortex_rm.accounting.periods import Period


@dataclass(frozen=True)
class PayoutRules:
    """The one tunable of the rules."""

    min_witnesses: int = 2
    """Distinct witnesses needed at an instant (fewer when the ring gave the node fewer probers then)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_witnesses <= 255:
            raise ValueError(f"min_witnesses must lie in [1, 255], not {self.min_witnesses}")


class Verdict(enum.Enum):
    """What became of one attestation (or, for the first two, of a whole entry)."""

    CREDITED = "credited"  # added instants to its witness's union for the subject
    OVERLAP = "overlap"  # valid, but its witness had attested all of it already
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    SELF_ATTESTATION = "self-attestation"
    REPLAY = "replay"
    NOT_NEIGHBOUR = "not-neighbour"
    OUTSIDE_PERIOD = "outside-period"
    OTHER_SUBJECT = "other-subject"  # a subject this tally was told to leave out


class _Subject:
    """What a tally holds about one subject: its probers, and each witness's accepted instants."""

    __slots__ = ("probers", "attested", "sequences")

    def __init__(self, probers: Mapping[int, Sequence[Interval]]) -> None:
        self.probers = probers
        self.attested: dict[int, IntervalUnion] = {}
        self.sequences: dict[int, set[int]] = {}  # per witness: the sequence numbers read


class UptimeTally:
    """Applies the rules (module doc) to ledger entries read in log order, for one period."""

    def __init__(
        self,
        period: Period,
        history: NeighbourHistory,
        rules: PayoutRules | None = None,
        subjects: Container[int] | None = None,
    ) -> None:
        self.period = period
        self.history = history
        self.rules = rules or PayoutRules()
        self._only = subjects  # None: every subject
        self._subjects: dict[int, _Subject] = {}
        self.verdicts: Counter[Verdict] = Counter()
        self.entries = 0  # ledger entries read (attestation batches and others)

    def add_entry(self, entry: bytes) -> list[Verdict]:
        """One ledger entry; entries of other kinds (a payout statement...) are passed over."""
        self.entries += 1
        if not entry or entry[0] != KIND_ATTESTATIONS:
            return []
        try:
            batch = decode_attestations(entry)
        except MalformedAttestations:
            self.verdicts[Verdict.MALFORMED] += 1
            return [Verdict.MALFORMED]
        return self.add_batch(batch)

    def add_batch(self, batch: SignedAttestations) -> list[Verdict]:
        """A decoded batch: its signature checked, then each attestation judged; the verdicts in order."""
        if self._only is not None and not any(a.subject in self._only for a in batch.attestations):
            self.verdicts[Verdict.OTHER_SUBJECT] += len(batch.attestations)
            return [Verdict.OTHER_SUBJECT] * len(batch.attestations)
        if signature_error(batch) is not None:
            self.verdicts[Verdict.BAD_SIGNATURE] += 1
            return [Verdict.BAD_SIGNATURE]
        verdicts = [self._judge(a.witness, a.subject, a.start_ms, a.end_ms, a.sequence) for a in batch.attestations]
        self.verdicts.update(verdicts)
        return verdicts

    def _judge(self, witness: int, subject: int, start: int, end: int, sequence: int) -> Verdict:
        if self._only is not None and subject not in self._only:
            return Verdict.OTHER_SUBJECT
        if witness == subject:
            return Verdict.SELF_ATTESTATION
        state = self._subjects.get(subject)
        if state is None:
            probers = self.history.witnesses_of(subject, self.period.start_ms, self.period.end_ms)
            if not probers:  # no member of the ring in the period: nothing to hold (made-up ids cost no memory)
                return Verdict.NOT_NEIGHBOUR
            state = self._subjects[subject] = _Subject(probers)
        seen = state.sequences.setdefault(witness, set())
        if sequence in seen:
            return Verdict.REPLAY
        seen.add(sequence)
        start, end = max(start, self.period.start_ms), min(end, self.period.end_ms)
        if start >= end:
            return Verdict.OUTSIDE_PERIOD
        allowed = clipped(state.probers.get(witness, ()), start, end)
        if not allowed:
            return Verdict.NOT_NEIGHBOUR
        union = state.attested.get(witness)
        if union is None:
            union = state.attested[witness] = IntervalUnion()
        added = 0
        for low, high in allowed:
            added += union.add(low, high)
        return Verdict.CREDITED if added else Verdict.OVERLAP

    def uptime_intervals(self, subject: int) -> list[Interval]:
        """The instants of the period for which ``subject`` is paid (the quorum rule of the module doc)."""
        state = self._subjects.get(subject)
        if state is None:
            return []
        attested = [union.intervals for union in state.attested.values()]
        return quorum_coverage(attested, state.probers.values(), self.rules.min_witnesses)

    def uptimes(self) -> dict[int, int]:
        """Each attested node's uptime in the period, in ms (nodes with none are left out)."""
        result = {}
        for subject in self._subjects:
            uptime = total(self.uptime_intervals(subject))
            if uptime:
                result[subject] = uptime
        return result

    def statement(self, log_size: int, log_root: bytes) -> PayoutStatement:
        """The unsigned payout statement of this tally, computed from the first ``log_size`` entries."""
        uptimes = self.uptimes()
        return PayoutStatement(
            self.period, self.rules.min_witnesses, log_size, log_root, tuple(sorted(uptimes.items()))
        )


def shares(uptimes: Mapping[int, int]) -> dict[int, Fraction]:
    """Each node's share: its uptime over the sum of all uptimes (exact; empty when nobody was up)."""
    whole = sum(uptimes.values())
    return {node: Fraction(ms, whole) for node, ms in uptimes.items() if ms} if whole else {}


def tally(
    entries: Iterable[bytes], period: Period, history: NeighbourHistory, rules: PayoutRules | None = None
) -> UptimeTally:
    """A tally of ``entries`` (in log order) for ``period``."""
    result = UptimeTally(period, history, rules)
    for entry in entries:
        result.add_entry(entry)
    return result

